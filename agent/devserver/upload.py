"""Receive a backup upload (docs/commands.md, "Databases"): a streamed `multipart/form-data` body.

Small fields (`backup_uid`, `service_uid`, `sha256`, `size`, `compressed_size`, `manifest`)
are kept in memory (bounded); the `backup_file` part goes straight to disk through a
SHA-256, so memory stays constant whatever the backup size. The stored file is checked
against the declared `sha256` and `compressed_size` (4xx makes the agent fail at once).
"""

import hashlib
import os
import re
import tempfile

MAX_FIELD_BYTES = 1024 * 1024
MAX_HEADER_BYTES = 16 * 1024
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")


class UploadError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def _boundary(content_type):
    match = re.search(r'boundary="?([^";]+)"?', content_type or "")
    if not content_type.lower().startswith("multipart/form-data") or not match:
        raise UploadError(400, "multipart/form-data with a boundary expected")
    return match.group(1).encode("latin-1")


def _disposition(header_block):
    """(name, filename) from a part's header block."""
    text = header_block.decode("utf-8", "replace")
    name = re.search(r'(?i)content-disposition:[^\r\n]*?\bname="([^"]*)"', text)
    filename = re.search(r'(?i)content-disposition:[^\r\n]*?\bfilename="([^"]*)"', text)
    if not name:
        raise UploadError(400, "part without a name")
    return name.group(1), filename.group(1) if filename else None


class _FilePart:
    def __init__(self, directory, filename):
        fd, self.tmp = tempfile.mkstemp(dir=directory, prefix=".upload-")
        self.file = os.fdopen(fd, "wb")
        self.filename = filename
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data):
        self.file.write(data)
        self.sha.update(data)
        self.size += len(data)

    def finish(self):
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def discard(self):
        if not self.file.closed:
            self.file.close()
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


class _FieldPart(bytearray):
    def write(self, data):
        if len(self) + len(data) > MAX_FIELD_BYTES:
            raise UploadError(413, "form field too large")
        self.extend(data)


class MultipartReader:
    """Push parser: feed chunks, it routes each part's bytes to a sink."""

    def __init__(self, boundary, directory):
        self.delimiter = b"--" + boundary
        self.separator = b"\r\n" + self.delimiter
        self.directory = directory
        self.buf = b""
        self.state = "preamble"
        self.sink = None
        self.fields = {}
        self.file = None

    def feed(self, data):
        self.buf += data
        while self._step():
            pass

    def _step(self):
        """Process what the buffer allows; True if progress was made."""
        if self.state == "preamble":
            if len(self.buf) > MAX_HEADER_BYTES and self.buf.find(self.delimiter) < 0:
                raise UploadError(400, "no multipart delimiter found")
            return self._after_delimiter(self.buf.find(self.delimiter), len(self.delimiter))
        if self.state == "after":
            return self._part_start()
        if self.state == "headers":
            return self._headers()
        if self.state == "body":
            return self._body()
        return False

    def _after_delimiter(self, index, length):
        if index < 0:
            return False
        self.buf = self.buf[index + length:]
        self.state = "after"
        return True

    def _part_start(self):
        if len(self.buf) < 2:
            return False
        if self.buf.startswith(b"--"):
            self.state, self.buf = "done", b""
            return False
        self.buf = self.buf[2:] if self.buf.startswith(b"\r\n") else self.buf
        self.state = "headers"
        return True

    def _headers(self):
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > MAX_HEADER_BYTES:
                raise UploadError(400, "part headers too large")
            return False
        name, filename = _disposition(self.buf[:end])
        self.buf = self.buf[end + 4:]
        if filename is not None and name == "backup_file":
            if self.file is not None:
                raise UploadError(400, "more than one backup_file part")
            self.file = self.sink = _FilePart(self.directory, filename)
        else:
            self.sink = self.fields[name] = _FieldPart()
        self.state = "body"
        return True

    def _body(self):
        index = self.buf.find(self.separator)
        if index >= 0:
            self.sink.write(self.buf[:index])
            return self._after_delimiter(index, len(self.separator))
        # Keep a tail that could be the start of a separator split across chunks.
        keep = len(self.separator) - 1
        if len(self.buf) > keep:
            self.sink.write(self.buf[:-keep])
            self.buf = self.buf[-keep:]
        return False

    def field(self, name):
        value = self.fields.get(name)
        return None if value is None else bytes(value).decode("utf-8", "replace").strip()


def receive(req, uploads_dir):
    """Store the upload of `req` under `uploads_dir/<backup_uid>/`; returns a result dict.

    Raises UploadError (400 malformed, 413 too large, 422 integrity mismatch)."""
    os.makedirs(uploads_dir, mode=0o700, exist_ok=True)
    reader = MultipartReader(_boundary(req.headers.get("content-type", "")), uploads_dir)
    try:
        for chunk in req.iter_body():
            reader.feed(chunk)
        if reader.state != "done" or reader.file is None:
            raise UploadError(400, "incomplete multipart body or no backup_file part")
        reader.file.finish()
        return _store(reader, uploads_dir)
    finally:
        if reader.file is not None:
            reader.file.discard()


def _store(reader, uploads_dir):
    part = reader.file
    sha256 = part.sha.hexdigest()
    declared_sha = reader.field("sha256")
    if declared_sha and declared_sha.lower() != sha256:
        raise UploadError(422, "sha256 mismatch: received %s" % sha256)
    declared_size = reader.field("compressed_size")
    if declared_size and declared_size != str(part.size):
        raise UploadError(422, "compressed_size mismatch: received %d bytes" % part.size)
    backup_uid = reader.field("backup_uid") or "unnamed"
    name = os.path.basename(part.filename or "")
    if not SAFE_NAME.match(backup_uid) or not SAFE_NAME.match(name):
        raise UploadError(400, "invalid backup_uid or file name")
    target_dir = os.path.join(uploads_dir, backup_uid)
    os.makedirs(target_dir, mode=0o700, exist_ok=True)
    path = os.path.join(target_dir, name)
    os.rename(part.tmp, path)
    manifest = reader.field("manifest")
    if manifest is not None:
        with open(os.path.join(target_dir, name + ".manifest.json"), "w") as f:
            f.write(manifest)
    return {"backup_uid": backup_uid, "service_uid": reader.field("service_uid"),
            "file_name": name, "sha256": sha256, "size": part.size, "path": path}
