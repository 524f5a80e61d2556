"""The arbiter of `run` mode: spawns the worker child, restarts it, stops it (gunicorn's Arbiter).

The child is a fresh interpreter started as WORKER_USER with ``user=``,
``group=`` and an explicit ``extra_groups`` (without it root's supplementary
groups are kept: CPython gh-94632) and umask 027. Signal handlers only put an
event on the queue (docs/design.md, "Habits"); the loop acts:

- a worker exit with a code in ``exitcodes.NO_RESTART`` ends the arbiter with that code;
- other exits restart it after an exponential backoff; a worker that dies
  within ``boot_window`` seconds of its start ``boot_failures`` times in a row
  ends the arbiter with ``exitcodes.BOOT_FAILURE``;
- SIGTERM/SIGINT stop it in stages (TERM, wait GRACEFUL_TIMEOUT + margin, KILL);
- SIGHUP or :meth:`restart_worker` (the IPC op ``service.restart pulseup-worker``)
  replace it at once.
"""

import signal
import time
from dataclasses import dataclass, field

import gevent
import gevent.pool
import gevent.queue
import gevent.subprocess as subprocess

from agent import exitcodes, log

_log = log.get("supervisor.arbiter")
BOOT_WINDOW = 10.0
BOOT_FAILURES = 5
BACKOFF = (1.0, 60.0)
STOP_MARGIN = 5.0


@dataclass(frozen=True)
class WorkerSpec:
    argv: tuple
    uid: int
    gid: int
    extra_groups: tuple = ()
    env: dict = field(default_factory=dict)
    cwd: str = "/"


class Arbiter:
    def __init__(self, seam, spec, graceful_timeout, boot_window=BOOT_WINDOW, boot_failures=BOOT_FAILURES,
                 backoff=BACKOFF, stop_margin=STOP_MARGIN):
        self.seam, self.spec = seam, spec
        self.graceful_timeout, self.stop_margin = graceful_timeout, stop_margin
        self.boot_window, self.boot_failures = boot_window, boot_failures
        self.backoff = backoff
        self.events = gevent.queue.Queue()
        self.group = gevent.pool.Group()
        self.proc = None
        self.started_at = 0.0
        self.quick_failures = 0
        self.next_start = 0.0
        self.spawned = 0

    # --- recording only (signal handlers and other greenlets) ----------------
    def record_signal(self, signum):
        self.events.put(("signal", signum))

    def restart_worker(self):
        self.events.put(("restart", None))

    # --- the loop -------------------------------------------------------------
    def run(self):
        """Run until stopped; returns the process exit code."""
        handlers = [gevent.signal_handler(signum, self.record_signal, signum)
                    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)]
        try:
            return self._loop()
        finally:
            for handler in handlers:
                handler.cancel()
            self.group.kill(timeout=1.0)

    def _loop(self):
        while True:
            if self.proc is None and time.monotonic() >= self.next_start:
                self._spawn()
            try:
                kind, value = self.events.get(timeout=self._wait_time())
            except gevent.queue.Empty:
                continue
            code = self._on_event(kind, value)
            if code is not None:
                return code

    def _wait_time(self):
        if self.proc is not None:
            return None
        return max(0.0, self.next_start - time.monotonic())

    def _on_event(self, kind, value):
        if kind == "signal" and value != signal.SIGHUP:
            _log.info("signal %s: stopping the worker", signal.Signals(value).name)
            self.stop_worker()
            return exitcodes.OK
        if kind in ("signal", "restart"):
            _log.info("restarting the worker on request")
            self.stop_worker()
            self.next_start = 0.0
            return None
        proc, code = value
        return self._on_exit(code) if proc is self.proc else None

    def _spawn(self):
        spec = self.spec
        try:
            self.proc = self.seam.popen(
                spec.argv, user=spec.uid, group=spec.gid, extra_groups=list(spec.extra_groups),
                umask=0o027, close_fds=True, env=spec.env, cwd=spec.cwd, stdin=subprocess.DEVNULL)
        except OSError as exc:
            _log.error("cannot start the worker %s: %s", spec.argv[0], exc)
            self.started_at = time.monotonic()
            self.events.put(("exit", (None, exitcodes.FAILURE)))
            self.proc = None
            return
        self.started_at, self.spawned = time.monotonic(), self.spawned + 1
        _log.info("worker started", extra={"pid": self.proc.pid, "uid": spec.uid})
        watcher = self.group.spawn(self._watch, self.proc)
        watcher.link_exception(log.log_greenlet_crash)

    def _watch(self, proc):
        self.events.put(("exit", (proc, proc.wait())))

    def _on_exit(self, code):
        lived = time.monotonic() - self.started_at
        self.proc = None
        if code in exitcodes.NO_RESTART:
            _log.error("worker exited with %s (%s): not restarting", code, exitcodes.DESCRIPTIONS.get(code))
            return code
        self.quick_failures = self.quick_failures + 1 if lived < self.boot_window else 0
        if self.quick_failures >= self.boot_failures:
            _log.error("worker failed %d times within %g s of starting: giving up", self.quick_failures,
                       self.boot_window)
            return exitcodes.BOOT_FAILURE
        first, cap = self.backoff
        delay = min(cap, first * 2 ** max(0, self.quick_failures - 1))
        _log.warning("worker exited with %s after %.1f s; restarting in %.1f s", code, lived, delay)
        self.next_start = time.monotonic() + delay
        return None

    def stop_worker(self):
        """TERM, wait graceful_timeout + margin, then KILL (docs/design.md, "Habits")."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for signum, wait in ((signal.SIGTERM, self.graceful_timeout + self.stop_margin), (signal.SIGKILL, 10.0)):
            try:
                self.seam.kill(proc.pid, signum)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                _log.warning("worker %d did not stop within %g s", proc.pid, wait)
