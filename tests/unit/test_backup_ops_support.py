"""Synthetic backups for the backup-operations tests (no test functions here).

A "backup" is any byte string written under a real backup name with a real manifest
(the database engineer's manifest module), so upload, retention and copies see exactly
what the backup pipeline leaves on disk, without dumping a database.
"""

import hashlib
import os
import uuid

from agent.services.backups import manifest as mf

MIB = 1 << 20


def make_backup(directory, service_uid, created=None, backup_uid=None, payload=b"backup bytes",
                size=None, compression="zstd", fmt="pg_custom", backup_type="scheduled"):
    """Write a backup file + manifest; ``size`` (bytes) streams pseudo-random data instead
    of ``payload``. Returns the backup's path."""
    created = 1_700_000_000.0 if created is None else created
    backup_uid = backup_uid or f"auto-{service_uid}-{uuid.uuid4()}"
    mf.ensure_dir(directory)
    ts = mf.stamp(created)
    for n in range(1, 100):
        name = mf.file_name(ts, fmt, compression, n)
        if not os.path.exists(os.path.join(directory, name)):
            break
    path = os.path.join(directory, name)
    digest, written = hashlib.sha256(), 0
    with open(path, "wb") as handle:
        for block in _blocks(payload, size):
            handle.write(block)
            digest.update(block)
            written += len(block)
    os.chmod(path, 0o600)
    mf.write_json_atomic(path + ".json", {
        "manifest_version": 1, "backup_uid": backup_uid, "service_uid": service_uid,
        "engine": "postgresql", "engine_version": "16.0", "image": "postgres:16", "database": "app",
        "format": fmt, "compression": compression, "file_name": name, "size": written * 3,
        "compressed_size": written, "sha256": digest.hexdigest(), "created_at": mf.rfc3339(created),
        "completed_at": mf.rfc3339(created + 1), "backup_type": backup_type,
        "created_by": "pulseup-agent/test"})
    return path


def _blocks(payload, size):
    if size is None:
        yield payload
        return
    seed = hashlib.sha256(b"seed").digest()
    block = (seed * (MIB // len(seed)))
    counter = 0
    while size > 0:
        # vary every block so a stuck or repeated chunk changes the hash
        piece = counter.to_bytes(8, "big") + block[8:]
        counter += 1
        yield piece[:size]
        size -= len(piece)


class UploadStub:
    """A tiny upload endpoint on port 0: answers the scripted statuses in order (then 201),
    parsing each body with the devserver's own multipart reader. ``ssl_context`` makes it
    HTTPS (give it one that requires a client certificate to check mTLS)."""

    def __init__(self, tmp_dir, statuses=(), ssl_context=None, drop_first=0):
        from gevent.pywsgi import WSGIServer
        self.tmp_dir = str(tmp_dir)
        self.statuses = list(statuses)
        self.drop_first = drop_first
        self.requests = []
        kwargs = {"ssl_context": ssl_context} if ssl_context is not None else {}
        self.server = WSGIServer(("127.0.0.1", 0), self._app, log=None, error_log=None, **kwargs)

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.server.stop(timeout=1)

    @property
    def base(self):
        scheme = "https" if self.server.ssl_enabled else "http"
        return f"{scheme}://127.0.0.1:{self.server.server_port}"

    def _app(self, environ, start_response):
        from agent.devserver.upload import MultipartReader, _boundary
        reader = MultipartReader(_boundary(environ.get("CONTENT_TYPE", "")), self.tmp_dir)
        body = environ["wsgi.input"]
        received = 0
        while True:
            chunk = body.read(256 * 1024)
            if not chunk:
                break
            received += len(chunk)
            reader.feed(chunk)
            if self.drop_first and received > 1024:
                self.drop_first -= 1
                raise ConnectionResetError("stub drops the connection mid-body")
        record = {"path": environ["PATH_INFO"], "length": int(environ.get("CONTENT_LENGTH") or -1),
                  "received": received, "fields": {k: reader.field(k) for k in reader.fields},
                  "file_sha256": reader.file.sha.hexdigest() if reader.file else None,
                  "file_size": reader.file.size if reader.file else None,
                  "file_name": reader.file.filename if reader.file else None,
                  "complete": reader.state == "done"}
        if reader.file is not None:
            reader.file.discard()
        self.requests.append(record)
        status = self.statuses.pop(0) if self.statuses else 201
        start_response(f"{status} X", [("Content-Type", "application/json")])
        return [b'{"error": "scripted %d"}' % status]
