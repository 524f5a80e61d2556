"""Entry points of the root side: ``supervisor`` (IPC server only) and ``run`` (IPC server + worker child).

docs/protocol.md, "Supervisor IPC": ``supervisor`` refuses unless root and sends READY=1 once its
socket is bound; ``run`` is the only mode with restart logic. Started by a
non-root user, ``run`` has no privileges to separate: it runs the worker in
this process (the callable given by the CLI, so that this package never
imports the worker) and privileged commands answer ``unavailable``.
"""

import os
import signal
import sys

from agent import exitcodes, log, sdnotify
from agent.supervisor.dispatch import OpDispatcher
from agent.supervisor.ipc_server import IpcServer
from agent.supervisor.ops import Host
from agent.supervisor.seam import HostSeam

_log = log.get("supervisor")


class Supervisor:
    """The IPC server and the ops' shared host state."""

    def __init__(self, cfg, seam=None, roots=None):
        self.cfg, self.seam = cfg, seam or HostSeam()
        self.host = Host(cfg, self.seam) if roots is None else Host(cfg, self.seam, roots)
        self.worker = _lookup_user(self.seam, cfg.worker_user)
        self.server = IpcServer(cfg, OpDispatcher(self.host), self.seam,
                                worker_uid=self.worker.pw_uid if self.worker else None,
                                group_gid=socket_group(self.seam, cfg, self.worker))

    def start(self):
        """Bind the socket; raises OSError."""
        if self.worker is None:
            _log.warning("WORKER_USER %r does not exist: only root may use the IPC socket", self.cfg.worker_user)
        self.server.start()
        sdnotify.notify("READY=1", "STATUS=IPC socket bound")

    def stop(self):
        sdnotify.notify("STOPPING=1")
        self.server.stop(timeout=self.cfg.graceful_timeout)
        status = self.host.package_runner().status()
        if status["running"]:   # never killed from here (docs/operations.md, package updates)
            _log.warning("stopping while package run %s (pid %s) is running: it is left to finish",
                         status["run"]["run_id"], status["run"]["pid"])


def _lookup_user(seam, name):
    try:
        return seam.getpwnam(name)
    except KeyError:
        return None


def socket_group(seam, cfg, worker):
    """WORKER_GROUP's gid; the worker's primary group when that group does not exist."""
    try:
        return seam.getgrnam(cfg.worker_group).gr_gid
    except KeyError:
        return worker.pw_gid if worker else None


def supervisor_main(cfg):
    if os.geteuid() != 0:
        print("pulseup-agent supervisor: must run as root (use `worker` for the unprivileged side)",
              file=sys.stderr)
        return exitcodes.NO_PERMISSION
    supervisor = Supervisor(cfg)
    return _serving(supervisor, _until_signal)


def _until_signal():
    signum = wait_for_signal((signal.SIGTERM, signal.SIGINT))
    _log.info("signal %s: stopping", signal.Signals(signum).name)
    return exitcodes.OK


def wait_for_signal(signums):
    """Block the main thread until one of signums arrives; returns it.

    No gevent here (the ``supervisor`` role runs on threads): the handlers do
    nothing at all, and the interpreter writes each signal's number to a wakeup
    pipe (signal.set_wakeup_fd) that this thread reads, so a signal arriving at
    any moment, on any thread, is never missed.
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous_fd = signal.set_wakeup_fd(write_end)
    previous = {signum: signal.signal(signum, _record_only) for signum in signums}
    try:
        while True:
            for number in os.read(read_end, 64):
                if number in signums:
                    return signal.Signals(number)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(previous_fd)
        os.close(read_end)
        os.close(write_end)


def _record_only(signum, frame):
    pass   # the wakeup pipe carries the signal (docs/design.md, "Habits": handlers only record)


def run_main(cfg, config_file=None, in_process=None, worker_argv=None, seam=None, **arbiter_options):
    """``run``: supervisor + worker child as root; the in-process worker otherwise.

    ``worker_argv`` replaces the worker's command line (tests use a fake worker);
    ``arbiter_options`` tune restart timings (tests).
    """
    if os.geteuid() != 0:
        _log.warning("not running as root: privileged commands (reboot, packages, SSH keys...) are unavailable; "
                     "running the worker in this process")
        if in_process is None:
            return exitcodes.NO_PERMISSION
        return in_process()
    from agent.supervisor.arbiter import Arbiter   # gevent's: only `run` mode needs it
    supervisor = Supervisor(cfg, seam)
    if supervisor.worker is None:
        _log.error("WORKER_USER %r does not exist (create it, or set WORKER_USER)", cfg.worker_user)
        return exitcodes.CONFIG
    argv = worker_argv or default_worker_argv(config_file)
    arbiter = Arbiter(supervisor.seam, worker_spec(supervisor, argv), cfg.graceful_timeout, **arbiter_options)
    supervisor.host.restart_worker = arbiter.restart_worker
    return _serving(supervisor, arbiter.run)


def _serving(supervisor, run):
    """Bind the IPC socket, ``run()`` until it returns, stop; the exit code."""
    try:
        supervisor.start()
    except OSError as exc:
        _log.error("cannot bind %s: %s", supervisor.cfg.supervisor_socket, exc)
        return exitcodes.FAILURE
    try:
        code = run()
    finally:
        supervisor.stop()
    return exitcodes.OK if code is None else code


def default_worker_argv(config_file=None):
    options = ["--config", config_file] if config_file else []
    # -I: the child must import the installed agent, never one in its working directory
    return (sys.executable, "-I", "-m", "agent", *options, "worker")


def worker_spec(supervisor, argv):
    """Who the child runs as: WORKER_USER, its group, plus docker and the socket's group."""
    from agent.supervisor.arbiter import WorkerSpec
    pw, seam = supervisor.worker, supervisor.seam
    extra = []
    for gid in (_gid(seam, "docker"), supervisor.server.group_gid):
        if gid is not None and gid != pw.pw_gid and gid not in extra:
            extra.append(gid)
    env = dict(os.environ, HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name,
               LOG_LEVEL=supervisor.cfg.log_level, LOG_FORMAT=supervisor.cfg.log_format)
    return WorkerSpec(tuple(argv), pw.pw_uid, pw.pw_gid, tuple(extra), env)


def _gid(seam, name):
    try:
        return seam.getgrnam(name).gr_gid
    except KeyError:
        return None
