"""The allow-list of privileged operations (docs/protocol.md, "Supervisor IPC"; docs/operations.md, "Self-update"; docs/design.md, "Habits").

Not RPC into objects (supervisor's CVE-2017-11610 fix): :data:`OPS` maps each
op name to its argument schema, function, rate limit and default deadline,
and nothing else can be reached. No op takes a shell string, and no op takes a
free path: every path is fixed in :class:`Roots`. Every host action goes
through the :class:`~agent.supervisor.seam.HostSeam`.

An op function is ``func(call, args) -> dict`` and raises AgentError.
"""

import os
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from fnmatch import fnmatch
from typing import Callable

from marshmallow import ValidationError, validate, validates_schema

from agent import log
from agent.errors import AgentError
from agent.protocol import ipc
from agent.protocol.fields import USER_RE, NoArguments, RequestSchema, StrictBoolean, StrictString, matching
from agent.supervisor import packages, sshkeys, update

_log = log.get("supervisor.ops")
DAY = 86400.0


@dataclass(frozen=True)
class Roots:
    """Every path the ops touch; fixed, tests point them into a temporary directory."""
    logs: str = "/var/log"
    logs_excluded: str = "/var/log/pulseup"
    temp: str = "/tmp"
    uninstall_flag: str = "/var/run/pulseup-agent/delete-needed"
    uninstall_argv: tuple = ("/usr/lib/pulseup-agent/uninstall",)


@dataclass
class Host:
    """What ops share: settings, the seam, fixed roots, and what the arbiter plugs in."""
    cfg: object
    seam: object
    roots: Roots = field(default_factory=Roots)
    restart_worker: Callable = None     # set in `run` mode: restart the child instead of the unit
    worker_status: dict = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    package_deadline: float = packages.DEADLINE
    _packages: object = field(default=None, repr=False)
    _lock: object = field(default_factory=threading.Lock, repr=False)

    def package_running(self):
        return self._packages is not None and self._packages.status()["running"]

    def package_runner(self):
        """The one PackageRunner (made on first use, with the seam in place then)."""
        with self._lock:
            if self._packages is None:
                self._packages = packages.PackageRunner(self.seam, self.package_deadline)
            return self._packages


# Requests run on threads: edits of one file (authorized_keys, the update store) take turns.
_SSH_KEYS = threading.Lock()
_UPDATE = threading.Lock()


class Call:
    """One op invocation: the host, the peer, the deadline and work to do after the reply."""

    def __init__(self, host, peer=None, timeout=None):
        self.host, self.seam, self.cfg = host, host.seam, host.cfg
        self.peer, self.timeout = peer, timeout
        self.after = []

    def after_reply(self, func):
        self.after.append(func)


# --- system -----------------------------------------------------------------

def _run(call, argv, env=None):
    """Run argv; AgentError(command_failed) on a non-zero exit or a missing program."""
    try:
        result = call.seam.run(argv, timeout=call.timeout, env=env)
    except OSError as exc:
        raise AgentError("failed_precondition", f"cannot run {argv[0]}: {exc.strerror}") from exc
    except subprocess.TimeoutExpired as exc:  # the op's deadline
        raise AgentError("deadline_exceeded", f"{argv[0]} did not finish in time") from exc
    if result.exit_code != 0:
        raise AgentError("command_failed", f"{' '.join(argv[:3])} exited with {result.exit_code}",
                         exit_code=result.exit_code, stderr_tail=result.stderr_tail)
    return result


def reboot(call, args):
    _run(call, ["systemctl", "reboot"])
    return {"requested": "reboot"}


def shutdown(call, args):
    _run(call, ["systemctl", "poweroff"])
    return {"requested": "poweroff"}


# Refresh the index, then upgrade without questions (docs/commands.md, "Agent commands" whitelist).
UPDATE_STEPS = {
    "apt-get": [["apt-get", "-q", "update"],
                ["apt-get", "-q", "-y", "-o", "Dpkg::Options::=--force-confdef",
                 "-o", "Dpkg::Options::=--force-confold", "upgrade"]],
    "dnf": [["dnf", "-y", "makecache"], ["dnf", "-y", "upgrade"]],
    "yum": [["yum", "-y", "makecache"], ["yum", "-y", "update"]],
    "pacman": [["pacman", "-Syu", "--noconfirm"]],
}


def update_packages(call, args):
    """Start (or join) the background run; wait for it at most the caller's timeout.

    The run's life is its own (packages.DEADLINE): when the wait ends first the
    reply is deadline_exceeded and the run goes on (issue 17).
    """
    manager = next((name for name in UPDATE_STEPS if call.seam.which(name)), None)
    if manager is None:
        raise AgentError("failed_precondition", "no supported package manager (apt-get, dnf, yum, pacman)")
    path = call.seam.which(manager)
    steps = [[path, *argv[1:]] for argv in UPDATE_STEPS[manager]]
    env = {"DEBIAN_FRONTEND": "noninteractive"} if manager == "apt-get" else None
    run = call.host.package_runner().start(manager, steps, env)
    if not run.done.wait(_wait_seconds(call.timeout)):
        raise AgentError("deadline_exceeded", f"{manager} is still running in the supervisor (run {run.id}); "
                         "it is not stopped: system.package_status reports its outcome", run_id=run.id)
    return run.result()


def _wait_seconds(timeout):
    # answer a little before the caller gives up, so that it reads why
    return max(0.0, timeout - min(1.0, timeout / 10))


def package_status(call, args):
    return call.host.package_runner().status()


class RestartArgs(RequestSchema):
    # docs/protocol.md, "Supervisor IPC": the proxy is a container the worker restarts through Docker
    unit = StrictString(required=True, validate=validate.OneOf(["docker", "pulseup-worker"]))


def restart_service(call, args):
    unit = args["unit"]
    if unit == "pulseup-worker":
        # the requesting worker dies with the restart: answer first
        if call.host.restart_worker is not None:
            call.after_reply(call.host.restart_worker)
            return {"unit": unit, "via": "supervisor"}
        call.after_reply(lambda: _run(call, ["systemctl", "restart", "--no-block", "pulseup-worker.service"]))
        return {"unit": unit, "via": "systemd"}
    _run(call, ["systemctl", "restart", f"{unit}.service"])
    return {"unit": unit, "via": "systemd"}


# --- disk -------------------------------------------------------------------

def remove_old_files(seam, root, older_than, age_of, pattern="*", exclude=()):
    """Delete regular files under root matching pattern and older than older_than seconds.

    Walks with directory fds and never follows symlinks; returns (count, bytes).
    """
    now, count, freed = time.time(), 0, 0
    for dirpath, dirnames, filenames, dir_fd in seam.fwalk(root):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in exclude]
        for name in filenames:
            if not fnmatch(name, pattern):
                continue
            try:
                info = seam.lstat(name, dir_fd=dir_fd)
                if stat.S_ISREG(info.st_mode) and now - age_of(info) > older_than:
                    seam.unlink(name, dir_fd=dir_fd)
                    count, freed = count + 1, freed + info.st_size
            except FileNotFoundError:
                continue
    return count, freed


def _off_the_hub(func, *args, **kwargs):
    # a walk of a large /var/log or /tmp is blocking file I/O. Without gevent (the
    # `supervisor` role) each request has its own thread already; under gevent (`run`
    # mode) keep the IPC server and the arbiter responsive with gevent's thread pool.
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("threading"):
        return func(*args, **kwargs)
    import gevent
    return gevent.get_hub().threadpool.apply(func, args, kwargs)


def cleanup_logs(call, args):
    roots = call.host.roots
    count, freed = _off_the_hub(remove_old_files, call.seam, roots.logs, 30 * DAY, lambda st: st.st_mtime,
                                "*.log", exclude=(roots.logs_excluded,))
    return {"root": roots.logs, "deleted_files": count, "freed_bytes": freed}


def cleanup_temp(call, args):
    roots = call.host.roots
    count, freed = _off_the_hub(remove_old_files, call.seam, roots.temp, 7 * DAY, lambda st: st.st_atime)
    return {"root": roots.temp, "deleted_files": count, "freed_bytes": freed}


# --- agent ------------------------------------------------------------------

def uninstall(call, args):
    roots = call.host.roots
    try:
        call.seam.makedirs(os.path.dirname(roots.uninstall_flag), 0o755)
        os.close(call.seam.open(roots.uninstall_flag, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644))
    except OSError as exc:
        raise AgentError("permission_denied", f"cannot create {roots.uninstall_flag}: {exc.strerror}") from exc
    # docs/protocol.md, "Supervisor IPC": answer first; apps and databases keep running
    call.after_reply(lambda: _start_uninstall(call.seam, roots.uninstall_argv))
    return {"flag": roots.uninstall_flag}


def _start_uninstall(seam, argv):
    try:
        _log.info("starting the packaged uninstall", extra={"pid": seam.spawn_detached(argv)})
    except OSError as exc:
        _log.error("cannot start the packaged uninstall %s: %s", argv[0], exc.strerror)


class UpdateInstallArgs(RequestSchema):
    version = StrictString(required=True, validate=validate.Regexp(r"^v?\d+\.\d+\.\d+(\.dev\d+)?\Z"))
    file_name = StrictString(required=True, validate=validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9_.+~-]{0,127}\.deb\Z"))


def update_install(call, args):
    with _UPDATE:
        return update.install_op(call, args)


class WorkerStatusArgs(RequestSchema):
    connected = StrictBoolean(required=True)
    version = StrictString(required=True, validate=validate.Length(max=64))


def supervisor_status(call, args):
    """Read-only: who answers and what it knows (``pulseup-agent doctor`` asks this)."""
    from agent import __version__
    status = dict(call.host.worker_status)
    return {"version": __version__, "pid": os.getpid(), "uptime_seconds": round(time.time() - call.host.started_at, 1),
            "worker": {"connected": bool(status.get("connected")), "version": status.get("version"),
                       "reported_at": status.get("at")},
            "package_run_active": call.host.package_running()}


def worker_status(call, args):
    call.host.worker_status.clear()
    call.host.worker_status.update(args, at=time.time(), pid=getattr(call.peer, "pid", None))
    try:
        update.record_worker_status(call.seam, call.cfg, args)   # read by the update helper (docs/operations.md, "Self-update")
    except OSError as exc:
        _log.warning("cannot record the worker status: %s", exc)
    return {}


# --- ssh keys ---------------------------------------------------------------

class PublicKeyField(StrictString):
    """One OpenSSH public key line, deserialised to a validated sshkeys.PublicKey."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return sshkeys.parse_public_key(text)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


def _comment(text):
    try:
        sshkeys.check_comment(text)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class SshAddArgs(RequestSchema):
    user = StrictString(required=True, validate=matching(USER_RE))
    public_key = PublicKeyField(required=True)
    comment = StrictString(load_default=None, validate=_comment)


class SshRemoveArgs(RequestSchema):
    user = StrictString(required=True, validate=matching(USER_RE))
    fingerprint = StrictString(load_default=None, validate=validate.Regexp(r"^SHA256:[A-Za-z0-9+/]{43}\Z"))
    public_key = PublicKeyField(load_default=None)

    @validates_schema
    def _exactly_one(self, data, **kwargs):
        if (data.get("fingerprint") is None) == (data.get("public_key") is None):
            raise ValidationError("exactly one of fingerprint and public_key is required", "fingerprint")


def _key_file(call, user):
    try:
        pw = call.seam.getpwnam(user)
    except KeyError:
        raise AgentError("permission_denied", f"user {user!r} does not exist", field="user") from None
    sshkeys.check_user(pw, call.cfg.pulseup_ssh_users)
    return sshkeys.KeyFile(call.seam, pw)


def ssh_add(call, args):
    key = args["public_key"]
    if args["comment"] is not None:
        key.comment = args["comment"]
    with _SSH_KEYS:
        added = _key_file(call, args["user"]).add(key)
    return {"user": args["user"], "fingerprint": key.fingerprint, "added": added}


def ssh_remove(call, args):
    fingerprint = args["fingerprint"] or args["public_key"].fingerprint
    with _SSH_KEYS:
        removed = _key_file(call, args["user"]).remove(fingerprint)
    return {"user": args["user"], "fingerprint": fingerprint, "removed": removed}


# --- the allow-list ---------------------------------------------------------

@dataclass(frozen=True)
class Op:
    schema: type
    func: Callable
    rate: tuple            # (requests, per seconds), across all peers
    timeout: float         # default deadline when the request carries none


OPS = {
    ipc.OP_SYSTEM_REBOOT: Op(NoArguments, reboot, (2, 60.0), 60.0),
    ipc.OP_SYSTEM_SHUTDOWN: Op(NoArguments, shutdown, (2, 60.0), 60.0),
    ipc.OP_SYSTEM_UPDATE_PACKAGES: Op(NoArguments, update_packages, (4, 3600.0), 3600.0),
    ipc.OP_SYSTEM_PACKAGE_STATUS: Op(NoArguments, package_status, (120, 60.0), 5.0),
    ipc.OP_SERVICE_RESTART: Op(RestartArgs, restart_service, (10, 60.0), 120.0),
    ipc.OP_DISK_CLEANUP_LOGS: Op(NoArguments, cleanup_logs, (6, 60.0), 600.0),
    ipc.OP_DISK_CLEANUP_TEMP: Op(NoArguments, cleanup_temp, (6, 60.0), 600.0),
    ipc.OP_AGENT_UNINSTALL: Op(NoArguments, uninstall, (2, 60.0), 30.0),
    ipc.OP_AGENT_UPDATE_INSTALL: Op(UpdateInstallArgs, update_install, (6, 3600.0), 900.0),
    ipc.OP_SSH_KEYS_ADD: Op(SshAddArgs, ssh_add, (60, 60.0), 30.0),
    ipc.OP_SSH_KEYS_REMOVE: Op(SshRemoveArgs, ssh_remove, (60, 60.0), 30.0),
    ipc.OP_WORKER_STATUS: Op(WorkerStatusArgs, worker_status, (120, 60.0), 5.0),
    ipc.OP_SUPERVISOR_STATUS: Op(NoArguments, supervisor_status, (120, 60.0), 5.0),
}
