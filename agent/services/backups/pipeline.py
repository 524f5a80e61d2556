"""The backup pipeline of docs/commands.md, "Databases"

``docker exec`` of the engine's own dump tool, stdout and stderr kept apart, stdout
streamed through zstd (or gzip) into a temporary 0600 file while hashing it, then fsync,
rename to the final name, fsync the directory and write the manifest sidecar. A dump that
exits non-zero or prints nothing leaves no file and fails with its stderr tail; stderr
text alone is a warning kept in the log and the manifest (docs/commands.md, "Databases"). Memory stays flat:
at most two 1 MiB batches are alive, one being filled and one being compressed.
"""

import os
import time
from dataclasses import dataclass
from typing import Optional

import gevent

import agent
from agent import log
from agent.errors import AgentError
from agent.services.backups import manifest as mf
from agent.services.docker.exec import ExecStream
from agent.services.backups.streams import CHUNK, CompressedFile, disk_error, offload

STDERR_KEEP = 64 * 1024     # docs/commands.md, "Databases"
TAIL_BYTES = 4096           # stderr_tail limit (docs/commands.md, "Errors")
_log = log.get("database.backup")


@dataclass
class BackupJob:
    service_uid: str
    backup_uid: str
    database: Optional[str] = None
    format: Optional[str] = None        # "custom" | "plain" (postgresql)
    compression: str = "zstd"
    backup_type: str = "manual"


class StderrTail:
    """The last STDERR_KEEP bytes of a command's stderr."""

    def __init__(self):
        self.data = bytearray()

    def add(self, chunk):
        self.data += chunk
        if len(self.data) > STDERR_KEEP:
            del self.data[:-STDERR_KEEP]

    def text(self, limit=TAIL_BYTES):
        return log.redact(bytes(self.data[-limit:]).decode("utf-8", "replace").strip())


class Progress:
    """backup_progress_update events, throttled to one per ``interval`` while dumping."""

    interval = 2.0

    def __init__(self, ctx, job):
        self.ctx, self.job = ctx, job
        self.last = 0.0

    def emit(self, percent, message, bytes_done=None):
        data = {"backup_uid": self.job.backup_uid, "service_uid": self.job.service_uid,
                "percent": percent, "message": message, "status": "in_progress"}
        if bytes_done is not None:
            data["bytes_done"] = bytes_done
        self.ctx.emit("backup_progress_update", data)

    def bytes(self, done):
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.emit(10, "Dumping database", done)


def status_update(backup_uid, service_uid, status, backup_type="manual", error=None, **extra):
    """``("backup_status_update", data)``: the one builder of a backup's status event
    (docs/commands.md, "Databases"); ``error``, an AgentError, fills error_message/error_code."""
    data = {"backup_uid": backup_uid, "service_uid": service_uid, "status": status, "backup_type": backup_type}
    if error is not None:
        data.update(error_message=error.message, error_code=error.code)
    data.update(extra)
    return "backup_status_update", data


def status_event(ctx, job, status, **extra):
    ctx.emit(*status_update(job.backup_uid, job.service_uid, status, job.backup_type, **extra))


def run(ctx, adapter, cfg, target, job):
    """Back up ``target`` (a DatabaseTarget); returns the reply data of database.backup.create.

    Raises AgentError: command_failed (dump failed or empty), failed_precondition (disk
    full or unwritable), unavailable (docker), cancelled / deadline_exceeded.
    """
    started = time.time()
    status_event(ctx, job, "in_progress", started_at=mf.rfc3339(started))
    try:
        result = _run(ctx, adapter, cfg, target, job, started)
    except AgentError as exc:
        status_event(ctx, job, "failed", error_message=exc.message, error_code=exc.code)
        raise
    except BaseException:  # gevent kill at a blocking point = cancellation (CallContext docs)
        status_event(ctx, job, "failed", error_message="backup cancelled", error_code="cancelled")
        raise
    status_event(ctx, job, "completed", file_path=result["backup_path"],
                 file_size=result["compressed_size"], size=result["size"],
                 sha256=result["sha256"], manifest_path=result["manifest_path"])
    return result


def _run(ctx, adapter, cfg, target, job, started):
    progress = Progress(ctx, job)
    progress.emit(5, "Preparing backup")
    database = job.database or target.database
    fmt = target.engine.format_for(job.format)
    version = target.server_version(adapter)
    directory = os.path.join(cfg.pulseup_backup_dir, job.service_uid)
    ts = mf.stamp(started)
    sink = _open_sink(directory, ts, fmt, job.compression)
    try:
        progress.emit(10, "Dumping database", 0)
        script = target.engine.dump_script(database, fmt, job.backup_uid)
        code, stderr = _dump(ctx, adapter, target.name, script, sink, progress)
        _check_dump(code, stderr, sink, target.engine.name)
        progress.emit(90, "Finalizing backup", sink.size)
        offload(sink.finish)
        name = mf.publish(sink.path, directory, ts, fmt, job.compression)
    except OSError as exc:
        raise disk_error(exc, directory) from exc
    finally:
        if sink.fd is not None or os.path.exists(sink.path):
            sink.abort()
    manifest = _manifest(job, target, database, fmt, version, name, sink, started, stderr)
    path = os.path.join(directory, name)
    _write_manifest(path, manifest, directory)
    progress.emit(100, "Backup complete", sink.size)
    return _reply(job, path, manifest, time.time() - started)


def _open_sink(directory, ts, fmt, compression):
    try:
        mf.ensure_dir(directory)
        return CompressedFile(os.path.join(directory, mf.temp_name(mf.file_name(ts, fmt, compression))),
                              compression)
    except OSError as exc:
        raise disk_error(exc, directory) from exc


def _dump(ctx, adapter, container, script, sink, progress):
    """Stream the dump's stdout into ``sink``; returns (exit code, StderrTail)."""
    stderr, batch, pending, done = StderrTail(), bytearray(), None, 0
    pool = gevent.get_hub().threadpool
    with ExecStream(adapter, container, script) as stream:
        ctx.on_cancel(stream.close)
        try:
            for kind, data in stream.frames(timeout=ctx.remaining()):
                if kind != 1:
                    stderr.add(data)
                    continue
                batch += data
                if len(batch) >= CHUNK:
                    ctx.check()
                    if pending is not None:
                        pending.get()  # one batch compresses while the next one fills
                    pending, batch, done = pool.spawn(sink.write, batch), bytearray(), done + len(batch)
                    progress.bytes(done)
            if pending is not None:
                pending.get()
                pending = None
            if batch:
                offload(sink.write, batch)
        finally:
            if pending is not None:  # let the worker thread finish before the file goes away
                gevent.wait([pending])
        return stream.exit_code(), stderr


def _check_dump(code, stderr, sink, engine):
    """docs/commands.md, "Databases": a non-zero exit or empty output fails; stderr alone is a warning."""
    tail = stderr.text()
    if code != 0:
        first = tail.splitlines()[-1] if tail else "no error output"
        raise AgentError("command_failed", f"{engine} dump exited with {code}: {first}",
                         exit_code=code, stderr_tail=tail)
    if sink.size == 0:
        raise AgentError("command_failed", f"{engine} dump produced no output",
                         exit_code=code, stderr_tail=tail)
    if tail:
        _log.warning("dump succeeded with messages on stderr: %s", tail[-500:])


def _manifest(job, target, database, fmt, version, name, sink, started, stderr):
    warning = stderr.text()
    return {
        "manifest_version": 1, "backup_uid": job.backup_uid, "service_uid": job.service_uid,
        "engine": target.engine.name, "engine_version": version, "image": target.image,
        "database": database, "format": fmt, "compression": job.compression,
        "file_name": name, "size": sink.size, "compressed_size": sink.compressed_size,
        "sha256": sink.sha256.hexdigest(), "created_at": mf.rfc3339(started),
        "completed_at": mf.rfc3339(), "backup_type": job.backup_type,
        "created_by": f"pulseup-agent/{agent.__version__}",
        "warnings": [warning] if warning else [],
    }


def _write_manifest(path, manifest, directory):
    """Write the sidecar; without it the backup is useless, so the file goes too on failure."""
    try:
        offload(mf.write_json_atomic, path + ".json", manifest)
    except OSError as exc:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise disk_error(exc, directory) from exc


def _reply(job, path, manifest, duration):
    return {
        "status": "success", "message": f"Backup {manifest['file_name']} created",
        "backup_uid": job.backup_uid, "backup_path": path, "manifest_path": path + ".json",
        "compression": job.compression, "database": job.service_uid,
        "database_name": manifest["database"], "type": manifest["engine"],
        "format": manifest["format"], "engine_version": manifest["engine_version"],
        "size": manifest["size"], "compressed_size": manifest["compressed_size"],
        "sha256": manifest["sha256"], "created_at": manifest["created_at"],
        "duration_seconds": round(duration, 3),
    }
