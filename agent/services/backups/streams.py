"""Constant-memory byte plumbing for backups: compress+hash+write, hash, decompress.

CPU-heavy steps (zstd, zlib, SHA-256 over megabytes) and regular-file I/O run in
``gevent.get_hub().threadpool`` (docs/hosts.md, "Compression and hashing": compressing in the hub stalls every
greenlet; python-zstandard, zlib and hashlib release the GIL on large buffers). Each
object here is used by one greenlet at a time, so it needs no lock.
"""

import errno
import hashlib
import os
import zlib

import gevent

from agent.errors import AgentError

ZSTD_LEVEL = 3      # docs/design.md, "Habits": ~5x faster than gzip -6, smaller
GZIP_LEVEL = 6
CHUNK = 1 << 20
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_ACCESS = (errno.EACCES, errno.EPERM, errno.EROFS)


def offload(func, *args):
    """Run ``func(*args)`` in the hub's threadpool and wait cooperatively."""
    return gevent.get_hub().threadpool.spawn(func, *args).get()


def disk_error(exc, directory):
    """AgentError for an OSError writing into ``directory`` (docs/design.md, "Settings and files")."""
    if exc.errno in _NO_SPACE:
        return AgentError("failed_precondition", f"backup directory {directory}: no space left on device")
    if exc.errno in _NO_ACCESS:
        return AgentError("failed_precondition", f"backup directory {directory} is not writable: {exc.strerror}")
    return AgentError("internal", f"internal error: backup directory {directory}: {exc}")


class CompressedFile:
    """A new 0600 file receiving compressed data; counts both sizes and hashes what it stores."""

    def __init__(self, path, compression):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.compressed_size = 0
        if compression == "zstd":
            import zstandard    # at use: not part of an idle worker (issue 19)
            self._codec = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
        else:  # wbits 31 = gzip container, readable by gzip(1)
            self._codec = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)

    def write(self, data):
        self.size += len(data)
        self._store(self._codec.compress(data))

    def finish(self):
        """Flush the codec, fsync and close; OSError on a full disk."""
        self._store(self._codec.flush())
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = None

    def _store(self, data):
        if not data:
            return
        self.sha256.update(data)
        self.compressed_size += len(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def abort(self):
        """Close and delete the file (partial artifacts never stay behind)."""
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None
        try:
            os.unlink(self.path)
        except OSError:
            pass


def file_digest(path, check=None):
    """(sha256 hex, size) of a file, read in CHUNK pieces off the hub; ``check()`` between."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while True:
            if check is not None:
                check()
            block = offload(_read_into_hash, handle, digest)
            if not block:
                return digest.hexdigest(), size
            size += block


def _read_into_hash(handle, digest):
    data = handle.read(CHUNK)
    digest.update(data)
    return len(data)


class Decoder:
    """Yields the decompressed content of a stored backup in bounded pieces."""

    def __init__(self, path, compression):
        self.handle = open(path, "rb")
        if compression == "zstd":
            import zstandard
            self._reader = zstandard.ZstdDecompressor().stream_reader(self.handle, read_size=CHUNK)
            self._read = lambda: self._reader.read(CHUNK)
        else:
            self._inflate = zlib.decompressobj(31)
            self._read = self._gunzip

    def _gunzip(self):
        # decompress(max_length) keeps what did not fit in unconsumed_tail: feed it first.
        while not self._inflate.eof:
            source = self._inflate.unconsumed_tail or self.handle.read(CHUNK)
            if not source:
                raise zlib.error("truncated gzip stream")
            data = self._inflate.decompress(source, CHUNK)
            if data:
                return data
        return b""

    def chunks(self):
        """Decompressed pieces (each at most CHUNK bytes), decoded off the hub."""
        try:
            while True:
                data = offload(self._read)
                if not data:
                    return
                yield data
        except (_zstd_error(), zlib.error) as exc:
            raise AgentError("integrity_error", f"backup does not decompress: {exc}") from exc

    def close(self):
        self.handle.close()


def _zstd_error():
    import zstandard
    return zstandard.ZstdError
