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


def atomic_write(path, data, mode=0o600, sync_dir=True):
    """Replace ``path`` by ``data`` (bytes) atomically, with ``mode``; raises OSError."""
    directory, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
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
