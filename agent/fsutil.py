"""Durable file writes shared by every process (docs/commands.md, "Paths and files";
docs/protocol.md, "Enrollment and certificates").

Every state file, manifest, certificate and proxy config is written to a
temporary name in the same directory, fsynced, renamed over the target, and
the directory is fsynced, so a crash leaves either the old or the new file.
"""

import contextlib
import os
import tempfile


def fsync_dir(directory):
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, data, mode=0o600, sync_dir=True, temp_name=None):
    """Replace ``path`` by ``data`` (bytes) atomically, with ``mode``; raises OSError.

    ``temp_name(final_name)`` names the temporary file when its name matters (a backup's
    ``.partial-`` name, which start-up clean-up recognises); by default a random hidden one."""
    directory, name = os.path.split(os.path.abspath(path))
    if temp_name is None:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
    else:
        tmp = os.path.join(directory, temp_name(name))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:   # also a gevent kill: leave no temporary file behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(directory)


def unlink_quietly(path):
    """Remove ``path``; a missing file or any other OSError is ignored (clean-up paths)."""
    try:
        os.unlink(path)
    except OSError:
        pass
