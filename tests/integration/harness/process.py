"""Child processes, temp dirs, free ports and polling for the integration fixtures.

Every service runs in its own session (process group) so that teardown can signal the whole
group; its output goes to a log file whose tail is quoted when it fails to start.
"""
import ctypes
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import psutil

LOG_TAIL_LINES = 40
# Appended to PATH for services: a non-login root shell may lack the sbin dirs where
# dockerd, docker-proxy and mariadbd live.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PR_SET_PDEATHSIG = 1


class ServiceError(RuntimeError):
    """A service was installed but did not start or answer in time."""


TEMP_PREFIX = "pulseup-it-"
OWNER_FILE = ".pulseup-it-owner"


def make_tempdir(prefix, owner=None):
    """A fresh private dir under /tmp; short on purpose (unix socket paths max 107 bytes).

    It records which process made it, so that a later session can sweep the dirs of a run
    that was killed before its teardown (see sweep_stale_dirs).
    """
    path = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{prefix}-", dir="/tmp")
    with open(os.path.join(path, OWNER_FILE), "w") as f:
        f.write(_process_identity(os.getpid()))
    if owner is not None:
        shutil.chown(path, user=owner, group=owner)
    return path


def _process_identity(pid):
    """pid plus its start time, so a recycled pid is not mistaken for the owner."""
    try:
        return f"{pid} {psutil.Process(pid).create_time()}"
    except psutil.Error:
        return ""


def sweep_stale_dirs(release):
    """Delete /tmp/pulseup-it-* dirs whose owning process is gone. `release(dir)` first
    ends processes and unmounts what a killed session may have left there."""
    for path in glob.glob(f"/tmp/{TEMP_PREFIX}*"):
        try:
            with open(os.path.join(path, OWNER_FILE)) as f:
                recorded = f.read().strip()
        except OSError:
            continue  # not ours, or still being created
        pid = int(recorded.split()[0]) if recorded else 0
        if recorded and _process_identity(pid) == recorded:
            continue  # a live session (possibly another developer's) still uses it
        try:
            release(path)
        except ServiceError as e:  # leave it for a later sweep, tell why
            print(f"cannot sweep {path}: {e}")
            continue
        shutil.rmtree(path, ignore_errors=True)


def free_port():
    """A loopback TCP port free right now (the kernel picks it, so parallel runs differ)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def search_path():
    return os.environ.get("PATH", "") + os.pathsep + SYSTEM_PATH


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def log_tail(path, lines=LOG_TAIL_LINES):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return f"(no log: {e})"
    text = data.decode("utf-8", "replace").splitlines()
    return "\n".join(text[-lines:])


def _die_with_parent():
    # If pytest itself is killed, the kernel sends SIGTERM to the service (prctl(2)), so a
    # crashed run does not leave daemons behind. Runs in the child after any setuid.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class ManagedProcess:
    """A long-running child in its own process group, output appended to log_path."""

    def __init__(self, name, argv, log_path, env=None, user=None, cwd=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.env = env
        self.user = user
        self.cwd = cwd
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, cwd=self.cwd, user=self.user,
                start_new_session=True, preexec_fn=_die_with_parent)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def tail(self):
        return log_tail(self.log_path)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Signal the process group, wait up to timeout, then SIGKILL the group."""
        if self.proc is None:
            return
        _signal_group(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        # Children that outlived the leader still carry its group id.
        _signal_group(self.proc.pid, signal.SIGKILL)


def _signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def wait_until(check, what, timeout=30.0, interval=0.05, process=None, log_path=None):
    """Poll check() until it returns a truthy value; raise ServiceError with the log tail.

    Stops early when `process` (a ManagedProcess) has exited: no point waiting for a dead server.
    """
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as e:  # the service is not ready yet; keep the reason for the report
            last_error = e
        if process is not None and not process.alive():
            raise ServiceError(_failure_text(
                f"{process.name} exited with {process.proc.returncode} while waiting for {what}",
                last_error, log_path or process.log_path))
        time.sleep(interval)
    raise ServiceError(_failure_text(
        f"timed out after {timeout:.0f}s waiting for {what}", last_error,
        log_path or (process.log_path if process else None)))


def _failure_text(headline, last_error, log_path):
    text = headline
    if last_error is not None:
        text += f"\nlast error: {last_error!r}"
    if log_path:
        text += f"\n--- tail of {log_path} ---\n{log_tail(log_path)}"
    return text


def run(argv, what=None, timeout=120, **kwargs):
    """Run a short command; raise ServiceError with its output when it fails."""
    result = subprocess.run([str(a) for a in argv], stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=timeout, **kwargs)
    if result.returncode != 0:
        out = (result.stdout or b"") + (result.stderr or b"")
        raise ServiceError(f"{what or argv[0]} failed with {result.returncode}: "
                           f"{' '.join(map(str, argv))}\n{out.decode('utf-8', 'replace')[-4000:]}")
    return result
