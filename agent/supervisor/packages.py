"""Package-manager runs that are never killed mid-transaction (issue 17, item 3).

Killing ``apt-get``/``dpkg`` in the middle of an upgrade leaves "dpkg was
interrupted" behind, so the life of a run is not tied to how long anyone waits
for it:

- a run has its own deadline (:data:`DEADLINE`, far longer than a healthy
  upgrade); only at that deadline is the running step sent SIGTERM, never
  SIGKILL: a program told to stop can still write its status and release the
  dpkg lock, a killed one cannot;
- the caller waits at most its own timeout; when that expires it gets
  ``deadline_exceeded`` and the run goes on in the supervisor;
- at most one run at a time: a request during a run waits for that run;
- every run's outcome is logged and kept: the op ``system.package_status``
  answers with the current or last one (docs/operations.md).

Output goes to unlinked temporary files, not pipes: a step keeps writing even
when nobody reads (and survives a supervisor that stops before it).
"""

import os
import threading
import time

from agent import log
from agent.errors import AgentError

_log = log.get("supervisor.packages")
DEADLINE = 3600.0
TAIL_BYTES = 4096


class PackageRun:
    """One run of a manager's steps; ``outcome()`` is a JSON-able dict at any time."""

    def __init__(self, manager, steps, env):
        self.id = os.urandom(8).hex()
        self.manager, self.steps, self.env = manager, steps, env
        self.started_at, self.finished_at = time.time(), None
        self.state = "running"      # running | succeeded | failed | terminated | error
        self.step, self.pid, self.exit_code = None, None, None
        self.output, self.stderr_tail, self.message = "", "", ""
        self.done = threading.Event()

    def outcome(self):
        return {"run_id": self.id, "manager": self.manager, "state": self.state, "step": self.step,
                "pid": self.pid, "exit_code": self.exit_code, "started_at": self.started_at,
                "finished_at": self.finished_at, "output": self.output, "stderr_tail": self.stderr_tail,
                "message": self.message}

    def result(self):
        """The op's reply for a finished run; raises AgentError for any other end."""
        if self.state == "succeeded":
            return {"manager": self.manager, "output": self.output, "run_id": self.id}
        code = {"failed": "command_failed", "terminated": "deadline_exceeded"}.get(self.state, "failed_precondition")
        raise AgentError(code, self.message, exit_code=self.exit_code, stderr_tail=self.stderr_tail)


class PackageRunner:
    """Owns the package run thread: one run at a time, the last outcome kept."""

    def __init__(self, seam, deadline=DEADLINE):
        self.seam, self.deadline = seam, deadline
        self.lock = threading.Lock()
        self.current = None
        self.last = None
        self.thread = None

    def start(self, manager, steps, env=None):
        """The running run (joined) or a new one started in the background."""
        with self.lock:
            if self.current is not None:
                _log.info("package run %s already running: the request waits for it", self.current.id)
                return self.current
            run = self.current = PackageRun(manager, [list(argv) for argv in steps], env)
            self.thread = threading.Thread(target=self._execute, args=(run,), name=f"packages-{run.id}", daemon=True)
            self.thread.start()
        _log.info("package run %s started: %s", run.id, manager, extra={"run_id": run.id, "manager": manager})
        return run

    def status(self):
        with self.lock:
            run = self.current or self.last
        return {"running": run is not None and run.state == "running", "run": run.outcome() if run else None}

    def _execute(self, run):
        try:
            self._steps(run, time.monotonic() + self.deadline)
        except Exception as exc:  # an unexpected failure must still end the run
            _log.exception("package run %s crashed", run.id)
            run.state, run.message = "error", f"internal error: {exc.__class__.__name__}"
        finally:
            run.finished_at = time.time()
            with self.lock:
                self.current, self.last = None, run
            run.done.set()
            _log_outcome(run)

    def _steps(self, run, deadline):
        for argv in run.steps:
            run.step = " ".join(argv[:1] + argv[-1:])
            if not self._step(run, argv, deadline):
                return
        run.state, run.message = "succeeded", f"{run.manager} finished"

    def _step(self, run, argv, deadline):
        """Run one step to its end; False when the run stops here."""
        import tempfile   # at use: an idle supervisor does without (issue 19)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = self.seam.start(argv, env=run.env, stdout=out, stderr=err)
            except OSError as exc:
                run.state, run.message = "error", f"cannot run {argv[0]}: {exc.strerror}"
                return False
            run.pid = proc.pid
            terminated = self._wait(run, proc, deadline)
            run.exit_code, run.pid = proc.returncode, None
            run.output, run.stderr_tail = _tail(out), _tail(err)
        if terminated:
            run.state = "terminated"
            run.message = f"{run.step} was stopped with SIGTERM at the package deadline ({self.deadline:g} s)"
            return False
        if run.exit_code != 0:
            run.state, run.message = "failed", f"{run.step} exited with {run.exit_code}"
            return False
        return True

    def _wait(self, run, proc, deadline):
        """Wait for proc; at the deadline send SIGTERM once and wait for its end (never SIGKILL).

        A blocking wait plus a timer: no polling loop for the hour an upgrade may take.
        """
        fired = threading.Event()

        def terminate():
            fired.set()
            _log.warning("package run %s: %s passed the deadline of %g s, sending SIGTERM", run.id, run.step,
                         self.deadline, extra={"run_id": run.id, "pid": proc.pid})
            self.seam.terminate(proc)

        timer = threading.Timer(max(0.0, deadline - time.monotonic()), terminate)
        timer.daemon = True
        timer.start()
        try:
            proc.wait()
        finally:
            timer.cancel()
        return fired.is_set()


def _tail(stream):
    stream.seek(0, os.SEEK_END)
    stream.seek(max(0, stream.tell() - TAIL_BYTES))
    return stream.read().decode("utf-8", "replace")


def _log_outcome(run):
    extra = {"run_id": run.id, "manager": run.manager, "state": run.state, "exit_code": run.exit_code,
             "duration_s": round(run.finished_at - run.started_at, 1)}
    level = _log.info if run.state == "succeeded" else _log.error
    level("package run %s %s: %s", run.id, run.state, run.message, extra=extra)
