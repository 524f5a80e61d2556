"""Run a service the way its installed systemd unit says, without systemd as PID 1.

docs/hosts.md, "The test machines": systemd is installed but not PID 1 here, so `systemctl start`
cannot work. :class:`UnitProcess` reads the installed unit file and applies
what matters to the agent: ExecStart, User= and Group= (plus the user's
supplementary groups, as systemd's initgroups does), WorkingDirectory=,
EnvironmentFile=, RuntimeDirectory= with its mode, and Type=notify through a
private NOTIFY_SOCKET on which READY=1 is awaited.
"""

import configparser
import os
import pwd
import grp
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid

from agent.config import parse_env_file

BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def read_unit(path):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(path)
    return parser


class UnitProcess:
    def __init__(self, unit_path, log_path):
        self.unit = read_unit(unit_path)
        self.svc = self.unit["Service"]
        self.log_path = log_path
        self.proc = None
        self.notify = None
        self.messages = []

    def _environment(self, address):
        env = dict(BASE_ENV, NOTIFY_SOCKET="@" + address)
        source = self.svc.get("EnvironmentFile", "")
        path = source.lstrip("-")
        if path and (os.path.exists(path) or not source.startswith("-")):
            env.update((key, value) for key, value, _ in parse_env_file(path))
        user = pwd.getpwnam(self.svc.get("User", "root"))
        env.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
        return env

    def _runtime_dir(self):
        name = self.svc.get("RuntimeDirectory")
        if name:
            path = os.path.join("/run", name)
            os.makedirs(path, exist_ok=True)
            user = pwd.getpwnam(self.svc.get("User", "root"))
            os.chown(path, user.pw_uid, grp.getgrnam(self.svc.get("Group", "root")).gr_gid)
            os.chmod(path, int(self.svc.get("RuntimeDirectoryMode", "0755"), 8))

    def start(self):
        address = "pulseup-test-notify-" + uuid.uuid4().hex
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind("\0" + address)
        self._runtime_dir()
        user = pwd.getpwnam(self.svc.get("User", "root"))
        gid = grp.getgrnam(self.svc.get("Group", "root")).gr_gid
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            shlex.split(self.svc["ExecStart"]), cwd=self.svc.get("WorkingDirectory", "/"),
            env=self._environment(address), user=user.pw_uid, group=gid,
            extra_groups=os.getgrouplist(user.pw_name, gid), stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return self

    def wait_ready(self, timeout):
        """True once READY=1 arrived; False if the process exited or the time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            self.notify.settimeout(min(0.5, max(0.01, deadline - time.monotonic())))
            try:
                data = self.notify.recv(4096).decode()
            except socket.timeout:
                continue
            self.messages.extend(data.splitlines())
            if "READY=1" in data.splitlines():
                return True
        return False

    def output(self):
        with open(self.log_path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")

    def stop(self):
        """SIGTERM, then SIGKILL after TimeoutStopSec (KillMode=mixed); returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=float(self.svc.get("TimeoutStopSec", "90")))
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.notify.close()
        if self.svc.get("RuntimeDirectory"):     # systemd removes it when the unit stops
            shutil.rmtree(os.path.join("/run", self.svc["RuntimeDirectory"]), ignore_errors=True)
        return self.proc.returncode
