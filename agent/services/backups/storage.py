"""Storage paths for backup copies (docs/commands.md, "Databases", ``database.backup.storage.verify``).

A ``storage_path`` is resolved under the backup base directory when relative; its real
path (symlinks resolved) must lie inside one of ``PULSEUP_BACKUP_STORAGE_ROOTS`` and must
not be anything but a directory. Copies are written the way every backup file is
(docs/commands.md, "Paths and files"): a temporary name in the target directory, fsync, a no-overwrite
rename (link(2)), fsync of the directory, then the manifest sidecar the same way.
"""

import errno
import json
import os
import secrets

from agent.errors import AgentError
from agent.fsutil import unlink_quietly
from agent.services.backups import manifest as mf
from agent.services.backups.streams import CHUNK, offload

PROBE_PREFIX = ".pulseup-storage-test-"


def _refuse(message, normalized=None, code="invalid_argument"):
    error = AgentError(code, message, field="storage_path")
    # docs/commands.md, "Databases" storage.verify: the failure's data carries message and normalized_path
    error.details["message"] = message
    if normalized:
        error.details["normalized_path"] = normalized
    return error


def _inside(path, root):
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def resolve(cfg, storage_path):
    """The real absolute path of ``storage_path``.

    Raises AgentError(invalid_argument): empty, NUL, outside every allowed root, or an
    existing non-directory.
    """
    if not storage_path or "\x00" in storage_path:
        raise _refuse("storage_path: must be a non-empty path")
    candidate = storage_path if os.path.isabs(storage_path) else \
        os.path.join(cfg.pulseup_backup_dir, storage_path)
    real = os.path.realpath(candidate)
    roots = [os.path.realpath(root) for root in cfg.pulseup_backup_storage_roots]
    if not any(_inside(real, root) for root in roots):
        raise _refuse(f"storage_path {real} is outside the allowed storage roots "
                      f"({':'.join(cfg.pulseup_backup_storage_roots)})", real)
    if os.path.lexists(real) and not os.path.isdir(real):
        raise _refuse(f"storage_path {real} exists and is not a directory", real)
    return real


def _disk_refusal(exc, real):
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return _refuse(f"storage_path {real}: no space left on device", real, "failed_precondition")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return _refuse(f"storage_path {real} is not writable: {exc.strerror}", real, "permission_denied")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return _refuse(f"storage_path {real} is not a directory", real)
    return _refuse(f"storage_path {real}: {exc.strerror or exc}", real, "failed_precondition")


def ensure(cfg, storage_path):
    """Resolve, create (0700) when missing, and check again after creation (a symlink
    planted meanwhile must not lead outside the roots). Returns the real path.

    Raises AgentError: invalid_argument (see resolve), permission_denied or
    failed_precondition (cannot create).
    """
    real = resolve(cfg, storage_path)
    try:
        os.makedirs(real, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise _disk_refusal(exc, real) from exc
    if resolve(cfg, real) != real or not os.path.isdir(real):
        raise _refuse(f"storage_path {real} changed while it was being created", real)
    return real


def verify(cfg, storage_path):
    """``database.backup.storage.verify``: create, write + fsync + delete a probe file.

    Returns ``{message, normalized_path, status, free_bytes}``. Raises AgentError
    (invalid_argument, permission_denied, failed_precondition) carrying ``message`` and
    ``normalized_path`` in its details.
    """
    real = ensure(cfg, storage_path)
    probe = os.path.join(real, PROBE_PREFIX + secrets.token_hex(8))
    try:
        offload(_probe, probe)
        stat = os.statvfs(real)
    except OSError as exc:
        raise _disk_refusal(exc, real) from exc
    return {"message": f"storage path {real} is writable", "normalized_path": real,
            "status": "ok", "free_bytes": stat.f_bavail * stat.f_frsize}


def _probe(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.write(fd, b"pulseup storage test\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def copy_backup(source, directory, check=None):
    """Copy the backup ``source`` and its manifest into ``directory`` (atomically, never
    overwriting); returns the copy's path. Raises OSError or ValueError (unreadable
    manifest); a failed copy leaves nothing behind."""
    with open(source + ".json", "rb") as handle:
        manifest = json.loads(handle.read(1 << 20))
    match = mf.BACKUP_NAME.match(os.path.basename(source))
    if match is None or not isinstance(manifest, dict):
        raise ValueError(f"{source} is not a backup with a manifest")
    final = mf.file_name(match.group(1), manifest["format"], manifest["compression"])
    tmp = os.path.join(directory, mf.temp_name(final))
    try:
        _copy_file(source, tmp, check)
        name = mf.publish(tmp, directory, match.group(1), manifest["format"], manifest["compression"])
    except BaseException:
        unlink_quietly(tmp)
        raise
    path = os.path.join(directory, name)
    try:
        offload(mf.write_json_atomic, path + ".json", dict(manifest, file_name=name))
    except BaseException:
        unlink_quietly(path)
        raise
    return path


def _copy_file(source, target, check):
    """Chunk by chunk, each read+write off the hub; ``check()`` between chunks."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with open(source, "rb") as handle:
            while offload(_copy_block, handle, fd):
                if check is not None:
                    check()
        offload(os.fsync, fd)
    finally:
        os.close(fd)


def _copy_block(handle, fd):
    block = handle.read(CHUNK)
    view = memoryview(block)
    while view:
        view = view[os.write(fd, view):]
    return len(block)
