"""systemd's part for the packaging tests, where systemd is not PID 1 (docs/hosts.md, "The test machines").

:class:`ServiceManager` starts units with unitrun.UnitProcess, restarts a unit
that exits as its Restart=, RestartSec= and RestartPreventExitStatus= say, and
carries out ``systemctl restart UNIT`` asked by the supervisor: the supervisor
runs in a private mount namespace (unshare) where a shim named ``systemctl`` is
mounted over /usr/local/sbin, first on the PATH its seam gives to programs
(agent/supervisor/seam.py BASE_ENV); the shim appends the request to a file
this manager reads. Only that process and its children see the shim.
"""

import os
import shlex
import time

import gevent

from unitrun import UnitProcess

UNITS = "/lib/systemd/system"
SUPERVISOR, WORKER = "pulseup-supervisor.service", "pulseup-worker.service"


class ServiceManager:
    """Starts the units, restarts them as systemd would, and serves the shim's requests."""

    def __init__(self, workdir):
        self.workdir, self.units, self.restart_at, self.restarts = workdir, {}, {}, []
        self.shim_dir = os.path.join(workdir, "shim")
        self.requests = os.path.join(workdir, "systemctl-requests")
        os.makedirs(self.shim_dir)
        shim = os.path.join(self.shim_dir, "systemctl")
        with open(shim, "w") as handle:
            handle.write(f"#!/bin/sh\nprintf '%s\\n' \"$*\" >>{shlex.quote(self.requests)}\n")
        os.chmod(shim, 0o755)
        open(self.requests, "w").close()
        self._served = 0
        self._loop = gevent.spawn(self._run)

    def start(self, name):
        unit = UnitProcess(os.path.join(UNITS, name), os.path.join(self.workdir, name + ".log"))
        if name == SUPERVISOR:
            # Its seam runs `systemctl` with PATH=/usr/local/sbin:... (seam.BASE_ENV): the shim
            # is mounted there for the supervisor and its children only.
            script = f'mount --bind {shlex.quote(self.shim_dir)} /usr/local/sbin && exec "$0" "$@"'
            unit.svc["ExecStart"] = (f"unshare --mount --propagation private sh -c {shlex.quote(script)} "
                                     + unit.svc["ExecStart"])
        self.units[name] = unit.start()
        return unit

    def wait_ready(self, name, timeout=60):
        """True once the current process of ``name`` sent READY=1 (the loop reads NOTIFY_SOCKET)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            unit = self.units[name]
            if "READY=1" in unit.messages:
                return True
            gevent.sleep(0.1)
        return False

    def output(self, name, tail=4000):
        with open(os.path.join(self.workdir, name + ".log"), "rb") as handle:
            return handle.read().decode("utf-8", "replace")[-tail:]

    def restart(self, name, reason):
        self.restart_at.pop(name, None)
        old = self.units.pop(name, None)
        if old is not None:
            old.stop()
        self.restarts.append((name, reason, time.time()))
        return self.start(name)

    def last_start(self, name):
        """time.time() of the last restart of ``name`` (0 when never restarted)."""
        return max((at for unit, _, at in self.restarts if unit == name), default=0)

    @property
    def served(self):
        """How many ``systemctl`` requests have been carried out."""
        return self._served

    def _run(self):
        while True:
            for name, unit in list(self.units.items()):
                _drain(unit)
                self._restart_if_exited(name, unit)
            self._serve_requests()
            gevent.sleep(0.2)

    def _restart_if_exited(self, name, unit):
        code = unit.proc.poll()
        if code is None or unit.svc.get("Restart") != "always" \
                or str(code) in unit.svc.get("RestartPreventExitStatus", "").split():
            return
        due = self.restart_at.setdefault(name, time.monotonic() + float(unit.svc.get("RestartSec", "0")))
        if time.monotonic() >= due:
            self.restart(name, f"exited {code}")

    def _serve_requests(self):
        with open(self.requests) as handle:
            lines = handle.read().splitlines()
        for line in lines[self._served:]:
            argv = line.split()
            assert argv[:1] == ["restart"] and argv[-1] in (WORKER, SUPERVISOR), line
            self.restart(argv[-1], f"systemctl {line}")
        self._served = len(lines)

    def stop(self):
        self._loop.kill()
        for name in (WORKER, SUPERVISOR):
            if name in self.units:
                self.units.pop(name).stop()


def _drain(unit):
    """Read the pending sd_notify datagrams: an unread socket fills up and blocks the sender."""
    unit.notify.setblocking(False)
    while True:
        try:
            unit.messages.extend(unit.notify.recv(4096).decode().splitlines())
        except (BlockingIOError, InterruptedError):
            return
