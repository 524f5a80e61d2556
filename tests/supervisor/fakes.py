"""A recording host seam: programs are recorded, never run (docs/design.md, "Testing privileged operations")."""

import collections
import itertools
import os
import signal
import subprocess
import threading

from agent.supervisor.seam import HostSeam, RunResult


class FakeProcess:
    """What ``HostSeam.start`` returns: ends with its RunResult once released (at once unless held)."""

    def __init__(self, pid, argv, result, stdout, stderr, held):
        self.pid, self.argv, self.result = pid, argv, result
        self.returncode, self.signal = None, None
        self.release = threading.Event()
        for stream, text in ((stdout, result.stdout_tail), (stderr, result.stderr_tail)):
            if stream is not None:
                stream.write(text.encode())
        if not held:
            self.release.set()

    def wait(self, timeout=None):
        if not self.release.wait(timeout):
            raise subprocess.TimeoutExpired(self.argv, timeout)
        self.returncode = self.result.exit_code if self.signal is None else -self.signal
        return self.returncode


class RecordingSeam(HostSeam):
    """Files stay real (tests point the roots into tmp_path); programs and signals are recorded.

    ``results[name]`` is the RunResult (or exception) to give for the program named name
    (argv[0]'s base name), ``present`` the programs ``which`` finds. With ``hold`` set,
    started programs run until their ``release`` is set or they get a signal.
    """

    def __init__(self, present=("systemctl", "apt-get")):
        self.runs, self.spawned, self.killed, self.procs = [], [], [], []
        self.present = set(present)
        self.results = collections.defaultdict(lambda: RunResult(0, "ok\n", ""))
        self.hold = False
        self._pids = itertools.count(5000)

    def run(self, argv, timeout=None, env=None):
        self.runs.append((list(argv), dict(env or {}), timeout))
        return self._result(argv)

    def start(self, argv, env=None, stdout=None, stderr=None):
        self.runs.append((list(argv), dict(env or {}), None))
        proc = FakeProcess(next(self._pids), list(argv), self._result(argv), stdout, stderr, self.hold)
        self.procs.append(proc)
        return proc

    def _result(self, argv):
        result = self.results[os.path.basename(argv[0])]
        if isinstance(result, BaseException):
            raise result
        return result

    def spawn_detached(self, argv):
        self.spawned.append(list(argv))
        return 4242

    def which(self, name):
        return f"/usr/bin/{name}" if name in self.present else None

    def terminate(self, proc):
        self.kill(proc.pid, signal.SIGTERM)

    def kill(self, pid, signum):
        self.killed.append((pid, signum))
        for proc in self.procs:
            if proc.pid == pid and proc.returncode is None:
                proc.signal = signum
                proc.release.set()

    @property
    def argvs(self):
        return [argv for argv, _, _ in self.runs]
