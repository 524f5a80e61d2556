"""``pulseup-agent run`` for the end-to-end suite, with the supervisor's host seam swapped.

Run as root: ``python tests/e2e/agent_run.py --config FILE run``. Everything is the real
agent (CLI, config, supervisor, IPC server, arbiter, the worker child as WORKER_USER) except
two things the supervisor's seam exists for (agent/supervisor/seam.py; docs/design.md,
"Testing privileged operations": tests never reboot the machine):

- programs that would change the host (``systemctl``, package managers, dpkg) are recorded as
  one JSON line in ``$E2E_SEAM_RECORD`` and answered with exit code 0 (3 for the command
  lines listed in ``$E2E_SEAM_RECORD.fail``) instead of being run,
  and nothing but the stand-ins under ``$E2E_ROOTS`` is started detached (the self-update
  helper would run dpkg);
- the op roots (agent/supervisor/ops.py ``Roots``) point into ``$E2E_ROOTS``: the log and
  temp trees the cleanup ops walk, the uninstall flag, and the packaged uninstall, which is a
  stand-in script that only records that it ran.

The worker child is spawned by the real arbiter with the default argv (``python -I -m agent
worker``): no stand-in on the worker side.
"""

import json
import os
import sys

import agent.cli  # noqa: E402,F401  first, as in the real entry point: it patches gevent for `run`
from agent.supervisor import main as supervisor_main  # noqa: E402
from agent.supervisor import ops  # noqa: E402
from agent.supervisor.seam import HostSeam, RunResult  # noqa: E402

# What would reboot, power off, upgrade or restart something on this machine.
RECORDED = ("systemctl", "apt-get", "apt", "dnf", "yum", "pacman", "dpkg", "reboot", "shutdown", "poweroff")


class StandinSeam(HostSeam):
    """The real seam, except that host-changing programs are recorded, never run: every
    method of the seam that starts a program checks argv[0] (a new such method must be
    added here too; test_e2e_meta.py checks the list)."""

    PROGRAM_METHODS = ("run", "start", "spawn_detached", "popen")

    def __init__(self, record_path, roots_dir):
        self.record_path, self.roots_dir = record_path, roots_dir

    def _recorded(self, argv, env=None):
        if os.path.basename(argv[0]) not in RECORDED:
            return False
        self._record(argv, env)
        return True

    def _record(self, argv, env=None):
        with open(self.record_path, "a") as handle:
            handle.write(json.dumps({"argv": list(argv), "env": dict(env or {})}) + "\n")

    def run(self, argv, timeout=None, env=None):
        if self._recorded(argv, env):
            if " ".join(argv) in self._failing():
                return RunResult(3, "", f"stand-in failure of {argv[0]}\n")
            return RunResult(0, f"stand-in: {' '.join(argv)}\n", "")
        return super().run(argv, timeout=timeout, env=env)

    def _failing(self):
        """Command lines a test asked to fail (one per line in ``<record>.fail``)."""
        try:
            with open(self.record_path + ".fail") as handle:
                return {line.strip() for line in handle}
        except FileNotFoundError:
            return set()

    def start(self, argv, env=None, stdout=None, stderr=None):
        if self._recorded(argv, env):
            argv = ["/bin/echo", "stand-in:", *argv]
        return super().start(argv, env=env, stdout=stdout, stderr=stderr)

    def spawn_detached(self, argv):
        # only the stand-ins under E2E_ROOTS run detached (the packaged uninstall); anything
        # else (the self-update helper, which runs dpkg) is recorded, never started
        if not argv[0].startswith(self.roots_dir + os.sep):
            self._record(argv)
            argv = ["/bin/true"]
        return super().spawn_detached(argv)

    def popen(self, argv, **kwargs):
        if os.path.basename(argv[0]) in RECORDED:
            raise PermissionError(f"the e2e seam refuses to run {argv[0]}")
        return super().popen(argv, **kwargs)


def roots(base):
    """Every path the ops touch, inside ``base`` (made by the test fixture)."""
    return ops.Roots(logs=os.path.join(base, "log"), logs_excluded=os.path.join(base, "log", "pulseup"),
                     temp=os.path.join(base, "tmp"),
                     uninstall_flag=os.path.join(base, "run", "pulseup-agent", "delete-needed"),
                     uninstall_argv=(os.path.join(base, "uninstall-standin"),))


def main():
    seam = StandinSeam(os.environ["E2E_SEAM_RECORD"], os.environ["E2E_ROOTS"])
    fixed = roots(os.environ["E2E_ROOTS"])
    # run_main builds Supervisor(cfg, seam) -> Host(cfg, seam): hand both in here
    supervisor_main.HostSeam = lambda: seam
    supervisor_main.Host = lambda cfg, host_seam: ops.Host(cfg, host_seam, fixed)
    return agent.cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
