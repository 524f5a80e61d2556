"""``database.backup.download``: upload a backup to the control plane (docs/commands.md, "Databases").

``POST <API base>/api/agent/backups/upload`` as ``multipart/form-data`` over HTTPS with the
agent's mTLS identity (the control channel's certificate and CA, docs/protocol.md, "Enrollment and certificates"). The body
is produced piece by piece from disk with a precomputed ``Content-Length``, so memory is
constant whatever the backup size (docs/design.md, "Habits"). The file's size and
SHA-256 are re-checked against its manifest first. Network errors and 5xx are retried up
to 3 times with exponential back-off; a 4xx fails at once. ``backup_download_status``
reports ``uploading`` (then bytes at most every 5 s) and ``upload_completed`` /
``upload_failed``. The file is pinned against retention while it is being uploaded.
"""

import http.client
import json
import secrets
import ssl
import time
from urllib.parse import urlsplit

import gevent

from agent import __version__, config, log
from agent.errors import AgentError, ConfigError
from agent.services.backups import manifest as mf
from agent.services.database import restore
from agent.services.backups.streams import CHUNK, file_digest, offload

UPLOAD_PATH = "/api/agent/backups/upload"
RETRIES = 3                     # docs/commands.md, "Databases"
PROGRESS_INTERVAL = 5.0         # docs/commands.md, "Databases": at most every 5 s
IO_TIMEOUT = 120.0              # one socket read/write; the operation deadline bounds the rest
CONTENT_TYPE = {"zstd": "application/zstd", "gzip": "application/gzip"}
_log = log.get("backups.upload")


class Transient(Exception):
    """A failure worth another attempt (network error, 5xx)."""


def multipart_parts(fields, file_name, content_type, file_size, boundary):
    """(head bytes, tail bytes, total length): everything around the streamed file."""
    out = []
    for name, value in fields:
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n'
                   f'Content-Type: text/plain; charset=utf-8\r\n\r\n'.encode() + value.encode() + b"\r\n")
    out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="backup_file"; '
               f'filename="{file_name}"\r\nContent-Type: {content_type}\r\n\r\n'.encode())
    head, tail = b"".join(out), f"\r\n--{boundary}--\r\n".encode()
    return head, tail, len(head) + file_size + len(tail)


class Uploader:
    """Uploads one backup per call; ``backoff`` is the first retry delay (doubles)."""

    def __init__(self, cfg, pins, identity_loader=None, backoff=1.0):
        self.cfg = cfg
        self.pins = pins
        self.backoff = backoff
        self._identity_loader = identity_loader

    def upload(self, ctx, service_uid, backup_uid, backup_path=None):
        """The reply data of database.backup.download.

        Raises AgentError: invalid_argument (path outside the service's backup directory,
        uid mismatch), not_found (no such backup), failed_precondition (legacy file, no
        identity or API base), permission_denied (plain http, 401/403), integrity_error
        (file differs from its manifest, 422), unavailable (network, 5xx after retries),
        cancelled / deadline_exceeded.
        """
        path = restore.resolve(self.cfg, service_uid, backup_path, backup_uid)
        manifest, manifest_text = self._manifest(path, backup_uid)
        url, context = self._endpoint()
        job = _Progress(ctx, service_uid, manifest["backup_uid"], manifest["compressed_size"])
        with self.pins.hold(path):
            job.status("uploading", bytes_sent=0)
            try:
                self._verify(ctx, path, manifest)
                status = self._send_with_retries(ctx, url, context, path, manifest, manifest_text, job)
            except AgentError as exc:
                job.status("upload_failed", error_message=exc.message)
                raise
            except BaseException:   # gevent kill = cancellation (CallContext docs)
                job.status("upload_failed", error_message="upload cancelled")
                raise
        job.status("upload_completed", bytes_sent=job.total)
        return {"status": "success", "message": f"Backup uploaded (HTTP {status})",
                "backup_uid": manifest["backup_uid"], "backup_path": path, "service_uid": service_uid,
                "bytes_sent": job.total, "sha256": manifest["sha256"]}

    # -- preparation -----------------------------------------------------
    def _manifest(self, path, backup_uid):
        try:
            with open(path + ".json", "rb") as handle:
                text = handle.read(1 << 20).decode("utf-8")
        except (OSError, UnicodeError):
            text = None
        manifest = mf.load_manifest(path + ".json") if text is not None else None
        if manifest is None:
            raise AgentError("failed_precondition", "legacy backup without manifest")
        if backup_uid and manifest["backup_uid"] != backup_uid:
            raise AgentError("invalid_argument", f"backup_path holds backup {manifest['backup_uid']}, "
                                                 f"not {backup_uid}", field="backup_uid")
        return manifest, text

    def _endpoint(self):
        """(URL, TLS context or None): refuses http:// without ALLOW_INSECURE_TRANSPORT."""
        try:
            url = config.api_base_url(self.cfg) + UPLOAD_PATH
        except ConfigError as exc:
            raise AgentError("failed_precondition", f"no upload endpoint: {exc}") from exc
        if urlsplit(url).scheme == "http":
            if not self.cfg.allow_insecure_transport:
                raise AgentError("permission_denied", f"refusing to upload over plain HTTP ({url}); "
                                                      "ALLOW_INSECURE_TRANSPORT=true is for development only")
            return url, None
        if self._identity_loader is None:       # handed in by the worker (Services)
            raise AgentError("failed_precondition", "no client identity is available to upload with")
        identity = self._identity_loader(self.cfg)
        if identity is None:
            raise AgentError("failed_precondition", f"no valid client certificate in {self.cfg.cert_dir}")
        try:
            return url, identity.ssl_context(self.cfg.server_ca_file)
        except ConfigError as exc:
            raise AgentError("failed_precondition", str(exc)) from exc

    def _verify(self, ctx, path, manifest):
        try:
            digest, size = file_digest(path, ctx.check)
        except OSError as exc:
            raise AgentError("failed_precondition", f"cannot read {path}: {exc.strerror}") from exc
        if size != manifest["compressed_size"]:
            raise AgentError("integrity_error", f"backup size {size} differs from the manifest's "
                                                f"{manifest['compressed_size']}")
        if digest != manifest["sha256"]:
            raise AgentError("integrity_error", "backup checksum does not match its manifest")

    # -- sending ----------------------------------------------------------
    def _send_with_retries(self, ctx, url, context, path, manifest, manifest_text, job):
        delay = self.backoff
        for attempt in range(RETRIES + 1):
            ctx.check()
            try:
                return self._send_once(ctx, url, context, path, manifest, manifest_text, job)
            except Transient as exc:
                if attempt == RETRIES:
                    raise AgentError("unavailable", f"upload failed after {RETRIES + 1} attempts: {exc}") from None
                _log.warning("upload of %s: %s; retrying in %.1fs", manifest["backup_uid"], exc, delay)
                gevent.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _send_once(self, ctx, url, context, path, manifest, manifest_text, job):
        parts = urlsplit(url)
        boundary = "pulseup-" + secrets.token_hex(16)
        fields = [("backup_uid", manifest["backup_uid"]), ("service_uid", manifest["service_uid"]),
                  ("sha256", manifest["sha256"]), ("size", str(manifest["size"])),
                  ("compressed_size", str(manifest["compressed_size"])), ("manifest", manifest_text)]
        head, tail, length = multipart_parts(fields, manifest["file_name"], CONTENT_TYPE[manifest["compression"]],
                                             manifest["compressed_size"], boundary)
        if context is None:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=IO_TIMEOUT)
        else:
            conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=IO_TIMEOUT, context=context)
        ctx.on_cancel(conn.close)
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(length),
                   "User-Agent": f"PulseUp-Agent/{__version__}", "Accept": "application/json"}
        try:
            conn.request("POST", parts.path, body=self._body(ctx, path, head, tail, job), headers=headers)
            response = conn.getresponse()
            status, text = response.status, response.read(64 * 1024).decode("utf-8", "replace")
        except ssl.SSLCertVerificationError as exc:     # retrying cannot fix the trust
            raise AgentError("permission_denied", f"upload endpoint certificate: {exc.verify_message}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise Transient(f"{type(exc).__name__}: {exc}") from None
        finally:
            conn.close()
        return _check_status(status, text)

    def _body(self, ctx, path, head, tail, job):
        """The request body, one CHUNK at a time from disk (read off the hub)."""
        job.restart()
        yield head
        with open(path, "rb") as handle:
            while True:
                ctx.check()
                block = offload(handle.read, CHUNK)
                if not block:
                    break
                yield block
                job.sent(len(block))
        yield tail


def _check_status(status, text):
    """The status when it is a success; Transient for 5xx, AgentError for 4xx."""
    if status in (200, 201):
        return status
    reason = _reason(text)
    if status >= 500:
        raise Transient(f"HTTP {status}: {reason}")
    code = {401: "permission_denied", 403: "permission_denied", 409: "conflict",
            422: "integrity_error"}.get(status, "failed_precondition")
    raise AgentError(code, f"upload refused: HTTP {status}: {reason}", http_status=status)


def _reason(text):
    try:
        body = json.loads(text)
        if isinstance(body, dict) and body.get("error"):
            return str(body["error"])[:300]
    except ValueError:
        pass
    return text.strip()[:300] or "no details"


class _Progress:
    """backup_download_status events: start, bytes at most every PROGRESS_INTERVAL, end."""

    def __init__(self, ctx, service_uid, backup_uid, total):
        self.ctx, self.service_uid, self.backup_uid, self.total = ctx, service_uid, backup_uid, total
        self.done, self.last = 0, time.monotonic()

    def status(self, status, **extra):
        data = {"backup_uid": self.backup_uid, "service_uid": self.service_uid, "status": status,
                "bytes_total": self.total}
        data.update(extra)
        self.ctx.emit("backup_download_status", data)

    def restart(self):
        self.done = 0

    def sent(self, count):
        self.done += count
        now = time.monotonic()
        if now - self.last >= PROGRESS_INTERVAL:
            self.last = now
            self.status("uploading", bytes_sent=self.done)
