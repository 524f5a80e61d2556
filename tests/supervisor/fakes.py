"""A recording host seam: programs are recorded, never run (decisions 41)."""

import collections

from agent.supervisor.seam import HostSeam, RunResult


class RecordingSeam(HostSeam):
    """Files stay real (tests point the roots into tmp_path); programs and signals are recorded.

    ``results[argv[0]]`` is the RunResult (or exception) to give for that program,
    ``present`` the programs ``which`` finds.
    """

    def __init__(self, present=("systemctl", "apt-get")):
        self.runs, self.spawned, self.killed = [], [], []
        self.present = set(present)
        self.results = collections.defaultdict(lambda: RunResult(0, "ok\n", ""))

    def run(self, argv, timeout=None, env=None):
        self.runs.append((list(argv), dict(env or {}), timeout))
        result = self.results[argv[0]]
        if isinstance(result, BaseException):
            raise result
        return result

    def spawn_detached(self, argv):
        self.spawned.append(list(argv))
        return 4242

    def which(self, name):
        return f"/usr/bin/{name}" if name in self.present else None

    def kill(self, pid, signum):
        self.killed.append((pid, signum))

    @property
    def argvs(self):
        return [argv for argv, _, _ in self.runs]
