"""Self-update, supervisor side (docs/operations.md, "Self-update"): the op ``agent.update.install`` and its helper.

The op copies the worker's download (package, manifest, signature) from the
worker's spool into a root-only directory, verifies the signature with the
root-owned UPDATE_PUBLIC_KEY_FILE, the version, size and sha256 on that copy,
refuses anything not newer than the installed package, keeps the package for
a later revert, and after answering starts the helper.

The helper installs with ``dpkg -i``, makes the worker restart, waits until
the new worker has reported ``worker.status connected`` with the new version
(the supervisor records it in ``worker-status.json`` next to its socket), and
reinstalls the previous package if that does not happen within
UPDATE_HEALTH_DEADLINE. It is this very file, copied into a root-only
directory and run by Debian's /usr/bin/python3, so that dpkg replacing the
venv cannot break the process watching the result; under systemd it runs in
a transient unit of its own (systemd-run), because stopping the supervisor's
unit (KillMode=mixed) kills everything left in its cgroup.

Only the standard library is imported at module level: the helper has no
venv. The op's functions import the agent's modules where they are used, and
change the host only through the supervisor's seam (``call.seam``,
agent/supervisor/seam.py). The helper is a program of its own, without the
agent's modules: it runs dpkg and reads files itself.
"""

import argparse
import glob
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import time

STORE_DIR = "/var/lib/pulseup-agent/updates"
PACKAGE = "pulseup-agent"
MAX_PACKAGE = 1024 ** 3
MAX_SIDE_FILE = 64 * 1024
HELPER_PYTHON = "/usr/bin/python3"
HELPER_DELAY = 2.0     # lets the worker send its reply before the units restart
POLL = 0.5


def status_path(cfg):
    return os.path.join(os.path.dirname(cfg.supervisor_socket), "worker-status.json")


def record_worker_status(seam, cfg, status):
    """Write the last worker.status where the helper reads it (atomic replace)."""
    path = status_path(cfg)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = seam.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    with os.fdopen(fd, "w") as handle:
        json.dump({**status, "at": time.time()}, handle)
    seam.rename(tmp, path)


# --- the op -------------------------------------------------------------------

def install_op(call, args, store=STORE_DIR):
    """Verify the spooled update and schedule the helper; the op's reply.

    Raises AgentError: invalid_argument (version), failed_precondition (key
    missing, not newer than installed, no package to revert to, spool file
    missing or not a regular file), integrity_error (signature, version,
    size or sha256 mismatch).
    """
    from agent.protocol import update as manifests
    version = manifests.normalize(args["version"])
    sources = _open_spool(call, args["file_name"])
    try:
        call.seam.makedirs(store, 0o700)
        call.seam.chmod(store, 0o700)
        staging = call.seam.mkdtemp("incoming-", store)
        try:
            names = [_copy(call.seam, source, os.path.join(staging, name), limit) for name, limit, source in sources]
            kept, previous, installed = _accept(call, store, names, version, args["file_name"])
        finally:
            call.seam.rmtree(staging)
    finally:
        for _, _, source in sources:
            source.close()
    argv = helper_argv(call.seam, call.cfg, store, kept, previous, version)
    call.after_reply(lambda: call.seam.spawn_detached(argv))
    return {"version": version, "previous_version": installed, "revert_package": previous}


def _open_spool(call, file_name):
    """(name, size limit, open file) of the package, manifest and signature in the worker's spool."""
    from agent.errors import AgentError
    spool = os.path.join(call.cfg.state_dir, "update-spool")
    opened = []
    try:
        for name, limit in ((file_name, MAX_PACKAGE), (file_name + ".manifest", MAX_SIDE_FILE),
                            (file_name + ".manifest.sig", MAX_SIDE_FILE)):
            try:
                # O_NOFOLLOW: the spool is the worker's; a symlink there is refused
                fd = call.seam.open(os.path.join(spool, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError as exc:
                raise AgentError("failed_precondition", f"update file {name}: {exc.strerror}") from None
            opened.append((name, limit, os.fdopen(fd, "rb")))
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise AgentError("failed_precondition", f"update file {name} is not a regular file")
    except BaseException:
        for _, _, source in opened:
            source.close()
        raise
    return opened


def _accept(call, store, names, version, file_name):
    """Verify the copies; keep the package. (kept path, previous package, installed version)."""
    from agent.errors import AgentError
    _verify(call.cfg, names, version)
    installed = installed_version(call.seam)
    if not _is_newer(call.seam, version, installed):
        raise AgentError("failed_precondition", f"{version} is not newer than the installed {installed}")
    previous = previous_package(call.seam, store, installed)
    kept = os.path.join(store, file_name)
    call.seam.rename(names[0], kept)      # rename(2) replaces an existing file atomically
    return kept, previous, installed


def _copy(seam, source, path, limit):
    from agent.errors import AgentError
    copied = 0
    with os.fdopen(seam.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as out:
        while chunk := source.read(1024 * 1024):
            copied += len(chunk)
            if copied > limit:
                raise AgentError("integrity_error", f"{os.path.basename(path)} is larger than {limit} bytes")
            out.write(chunk)
    return path


def _verify(cfg, names, version):
    from agent.errors import AgentError
    from agent.protocol import update as manifests
    package, manifest_file, signature_file = names
    key = manifests.load_public_key(cfg.update_public_key_file, require_root=True)
    with open(manifest_file, "rb") as handle:
        body = handle.read()
    with open(signature_file, encoding="ascii", errors="replace") as handle:
        manifest = manifests.verify_manifest(body, handle.read(), key)
    if manifest["version"] != version:
        raise AgentError("integrity_error", f"the signed manifest is for {manifest['version']}, not {version}")
    if os.path.getsize(package) != manifest["size"] or _sha256(package) != manifest["sha256"]:
        raise AgentError("integrity_error", "update package does not match the signed size and sha256")


def _sha256(path):
    import hashlib    # loads OpenSSL: 3.5 MB an idle supervisor does not need (issue 19)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def installed_version(seam):
    """The installed package's version, or this process's when dpkg knows none."""
    result = seam.run(["dpkg-query", "-W", "-f=${Version}", PACKAGE], timeout=30)
    if result.exit_code == 0 and result.stdout_tail.strip():
        return result.stdout_tail.strip()
    from agent import __version__
    return __version__


def _is_newer(seam, version, installed):
    # dpkg's own ordering: it is the one that installs (~dev sorts first)
    return seam.run(["dpkg", "--compare-versions", version, "gt", installed], timeout=30).exit_code == 0


def previous_package(seam, store, installed, archives="/var/cache/apt/archives"):
    """The kept .deb of the installed version (from an earlier update or apt's cache).

    Raises AgentError(failed_precondition) when there is none: no revert, no update.
    """
    for directory in (store, archives):
        found = sorted(glob.glob(os.path.join(directory, f"{PACKAGE}_{installed}_*.deb")))
        if found:
            if directory != store:
                return seam.copy(found[0], store)
            return found[0]
    from agent.errors import AgentError
    raise AgentError("failed_precondition",
                     f"no package of the installed version {installed} to revert to: "
                     f"put {PACKAGE}_{installed}_<arch>.deb into {store} (docs/operations.md)")


def helper_argv(seam, cfg, store, new, old, version):
    """argv of the detached helper: a root-only copy of this file, outside the service's cgroup."""
    directory = seam.mkdtemp("helper-", store)
    copy = os.path.join(directory, "update_helper.py")
    seam.copyfile(__file__, copy)
    argv = [HELPER_PYTHON, "-I", copy, "--new", new, "--old", old, "--version", version,
            "--status", status_path(cfg), "--socket", cfg.supervisor_socket,
            "--deadline", str(cfg.update_health_deadline), "--log", os.path.join(store, "update.log")]
    if seam.under_systemd():
        argv = ["systemd-run", "--quiet", "--collect", f"--unit=pulseup-agent-update-{version}", *argv]
    return argv


# --- the helper (standard library only) ----------------------------------------

class Helper:
    def __init__(self, args):
        self.args = args

    def log(self, message, **fields):
        line = json.dumps({"time": time.time(), "component": "update-helper", "msg": message, **fields})
        with open(self.args.log, "a") as handle:
            handle.write(line + "\n")

    def install(self, package):
        done = subprocess.run([*self.args.dpkg, "-i", package], capture_output=True, text=True,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"})
        self.log("dpkg -i", package=package, exit_code=done.returncode, stderr=done.stderr[-2000:])
        return done.returncode == 0

    def restart_worker(self):
        """Under systemd the postinst's try-restart did it; otherwise ask the supervisor."""
        if os.path.isdir("/run/systemd/system"):
            return
        deadline = time.monotonic() + self.args.restart_timeout
        while time.monotonic() < deadline:
            try:
                self.log("restart requested", reply=ipc_call(self.args.socket, "service.restart",
                                                             {"unit": "pulseup-worker"}))
                return
            except OSError as exc:
                self.log("supervisor not reachable yet", error=str(exc))
                time.sleep(1)

    def connected(self, since):
        """True once the worker reports connected with the new version after ``since``."""
        deadline = time.monotonic() + self.args.deadline
        while time.monotonic() < deadline:
            try:
                with open(self.args.status) as handle:
                    status = json.load(handle)
                if status.get("connected") and status.get("version") == self.args.version \
                        and status.get("at", 0) >= since:
                    return True
            except (OSError, ValueError):
                pass
            time.sleep(POLL)
        return False

    def run(self):
        time.sleep(self.args.delay)
        since = time.time()
        if self.install(self.args.new):
            self.restart_worker()
            if self.connected(since):
                self.log("update healthy", version=self.args.version)
                return 0
            self.log("new worker did not connect in time: reverting", version=self.args.version)
        reverted = self.install(self.args.old)
        self.restart_worker()
        # the outcome, for the operator reading update.log (and the end-to-end test)
        self.log("reverted" if reverted else "revert failed", package=self.args.old)
        return 1


def ipc_call(path, op, args, timeout=10.0):
    """One request on the supervisor's socket (docs/protocol.md, "Supervisor IPC" framing); the reply object."""
    body = json.dumps({"id": "update-helper", "op": op, "args": args, "timeout": timeout}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(struct.pack(">I", len(body)) + body)
        size = struct.unpack(">I", _recv(sock, 4))[0]
        return json.loads(_recv(sock, size))


def _recv(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("supervisor closed the connection")
        data += chunk
    return data


def helper_main(argv=None):
    parser = argparse.ArgumentParser(description="pulseup-agent update helper (docs/operations.md, Self-update)")
    for name in ("--new", "--old", "--version", "--status", "--socket", "--log"):
        parser.add_argument(name, required=True)
    parser.add_argument("--deadline", type=float, required=True)
    parser.add_argument("--delay", type=float, default=HELPER_DELAY)
    parser.add_argument("--restart-timeout", type=float, default=30.0)
    # Keep the operator's edited conffiles (/etc/pulseup-agent/config) without a prompt: with
    # no terminal, dpkg fails "end of file on stdin at conffile prompt" when a release changes
    # the packaged default (dpkg(1) --force-confold; what unattended-upgrades passes too).
    parser.add_argument("--dpkg", nargs="+", default=["dpkg", "--force-confdef", "--force-confold"])
    return Helper(parser.parse_args(argv)).run()


if __name__ == "__main__":
    sys.exit(helper_main())
