"""``database.backup.restore``: docs/commands.md, "Databases"

The file must resolve inside the service's backup directory, its manifest must match the
container's engine, and its size and SHA-256 are checked before anything else happens.
Then an optional safety backup, then the decompressed dump is streamed into the restore
tool's stdin through the Docker API socket (never a shell argument). Redis loads an RDB
file only at start, so its container is stopped, ``dump.rdb`` replaced through Docker's
archive upload and the container started again.
"""

import os
import tarfile
import time
import uuid

import gevent
import gevent.pool

from agent import log
from agent.errors import AgentError
from agent.services.backups import manifest as mf, pipeline
from agent.services.database import provision
from agent.services.docker.exec import ExecStream
from agent.services.docker import translate
from agent.services.backups.streams import Decoder, file_digest
from agent.services.interrupted import PhaseLog

REDIS_STOP_TIMEOUT = 30
_log = log.get("database.restore")


def resolve(cfg, service_uid, backup_path=None, backup_uid=None):
    """The real path of the backup to restore.

    Raises AgentError: invalid_argument (outside the service's backup directory, not a
    regular file), not_found (no backup with that uid).
    """
    directory = os.path.join(cfg.pulseup_backup_dir, service_uid)
    if not backup_path:
        path = mf.find_by_uid(directory, service_uid, backup_uid)
        if path is None:
            raise AgentError("not_found", f"backup {backup_uid} of service {service_uid} does not exist",
                             field="backup_uid")
        backup_path = path
    real_dir = os.path.realpath(directory)
    candidate = backup_path if os.path.isabs(backup_path) else os.path.join(directory, backup_path)
    real = os.path.realpath(candidate)
    if os.path.dirname(real) != real_dir and not real.startswith(real_dir + os.sep):
        raise AgentError("invalid_argument",
                         f"backup_path is outside the backup directory of service {service_uid}",
                         field="backup_path")
    if not os.path.isfile(real):
        raise AgentError("invalid_argument", f"backup_path is not a regular file in the backup "
                                             f"directory of service {service_uid}", field="backup_path")
    return real


def verify(ctx, path, target):
    """The manifest of ``path`` after checking engine, size and SHA-256.

    Raises AgentError: failed_precondition (legacy file, other engine), integrity_error.
    """
    manifest = mf.load_manifest(path + ".json")
    if manifest is None:
        raise AgentError("failed_precondition", "legacy backup without manifest")
    if manifest["engine"] != target.engine.name:
        raise AgentError("failed_precondition", f"backup is a {manifest['engine']} backup, the "
                                                f"container runs {target.engine.name}")
    digest, size = file_digest(path, ctx.check)
    if size != manifest["compressed_size"]:
        raise AgentError("integrity_error", f"backup size {size} differs from the manifest's "
                                            f"{manifest['compressed_size']}")
    if digest != manifest["sha256"]:
        raise AgentError("integrity_error", "backup checksum does not match its manifest")
    return manifest


def run(ctx, adapter, cfg, target, path, safety_backup=True):
    """Restore ``path`` into ``target``; the reply of database.backup.restore. Raises AgentError
    (see resolve and verify; command_failed when the restore tool fails)."""
    journal = PhaseLog.for_call(ctx, "restore", f"restore:{target.service_uid}", target.service_uid,
                                container=target.name, engine=target.engine.name, backup_path=path)
    try:
        return _run(ctx, adapter, cfg, target, path, safety_backup, journal)
    finally:
        if journal is not None:
            journal.close()     # ended by itself: nothing for restart recovery


def _run(ctx, adapter, cfg, target, path, safety_backup, journal):
    started = time.time()
    manifest = verify(ctx, path, target)
    safety_uid = f"prerestore-{uuid.uuid4()}" if safety_backup else None
    _phase(journal, "safety_backup", safety_backup_uid=safety_uid)
    safety_path = None
    if safety_backup:
        job = pipeline.BackupJob(target.service_uid, safety_uid,
                                 database=manifest["database"], backup_type="pre_restore")
        safety_path = pipeline.run(ctx, adapter, cfg, target, job)["backup_path"]
    _phase(journal, "restoring", safety_backup_path=safety_path)
    provision.service_status(ctx, target.service_uid, "deploying", message="Restoring database from backup")
    try:
        writing = lambda: _phase(journal, "writing")    # noqa: E731 - at the point of no return
        if target.engine.name == "redis":
            _restore_redis(ctx, adapter, target, path, manifest, writing)
        else:
            _restore_stream(ctx, adapter, target, path, manifest, writing)
    except AgentError as exc:
        raise _failed(ctx, target, exc, safety_path) from exc
    provision.service_status(ctx, target.service_uid, "running", message="Database restored from backup")
    reply = {"status": "success", "message": f"Restored {manifest['file_name']}",
             "backup_uid": manifest["backup_uid"], "backup_path": path,
             "duration_seconds": round(time.time() - started, 3)}
    if safety_path:
        reply["safety_backup_path"] = safety_path
    return reply


def _phase(journal, name, **fields):
    if journal is not None:
        journal.phase(name, **fields)


def _failed(ctx, target, exc, safety_path):
    message = f"Database restore failed: {exc.message}"
    details = dict(exc.details)
    if safety_path:
        message += f" (safety backup: {safety_path})"
        details["safety_backup_path"] = safety_path
    provision.service_status(ctx, target.service_uid, "failed", error=message)
    return AgentError(exc.code, message, field=exc.field, **details)


def _restore_stream(ctx, adapter, target, path, manifest, writing=lambda: None):
    """Feed the decompressed dump to the restore tool's stdin; check its exit and the size."""
    script = target.engine.restore_script(manifest["database"], manifest["format"])
    decoder, stderr, sent = Decoder(path, manifest["compression"]), pipeline.StderrTail(), 0
    group = gevent.pool.Group()
    try:
        with ExecStream(adapter, target.name, script, stdin=True) as stream:
            ctx.on_cancel(stream.close)
            drain = group.spawn(_drain, stream, stderr, ctx.remaining())
            try:
                for chunk in decoder.chunks():
                    if sent == 0:
                        ctx.point_of_no_return()
                    stream.send(chunk)
                    if sent == 0:
                        writing()           # the first bytes are in the database's hands
                    sent += len(chunk)
            except AgentError as exc:
                if exc.code != "command_failed":
                    raise
            stream.close_stdin()
            drain.get()
            code = stream.exit_code()
    finally:
        decoder.close()
        group.kill()
    tail = stderr.text()
    if code != 0:
        raise AgentError("command_failed", f"restore exited with {code}: "
                         f"{tail.splitlines()[-1] if tail else 'no error output'}",
                         exit_code=code, stderr_tail=tail)
    if sent != manifest["size"]:
        raise AgentError("integrity_error", f"restored {sent} bytes, the manifest says {manifest['size']}")
    if tail:
        _log.warning("restore succeeded with messages on stderr: %s", tail[-500:])


def _drain(stream, stderr, timeout):
    """Collect the restore tool's output while stdin is being written (no pipe deadlock)."""
    for _kind, data in stream.frames(timeout=timeout):
        stderr.add(data)


def _restore_redis(ctx, adapter, target, path, manifest, writing=lambda: None):
    """Stop, replace /data/dump.rdb with a single-entry tar upload, start, wait for PONG."""
    for aof in ("/data/appendonlydir", "/data/appendonly.aof"):
        if adapter.path_exists(target.name, aof):
            raise AgentError("failed_precondition", f"redis keeps an append-only file ({aof}); "
                                                    "an RDB restore would be ignored")
    ctx.point_of_no_return()
    writing()
    with translate(f"stop {target.name}"):
        adapter.api.stop(target.name, timeout=REDIS_STOP_TIMEOUT)
    decoder = Decoder(path, manifest["compression"])
    try:
        with translate(f"upload dump.rdb into {target.name}"):
            adapter.api.put_archive(target.name, "/data", _tar_stream(decoder, manifest["size"]))
    finally:
        decoder.close()
        with translate(f"start {target.name}"):
            adapter.api.start(target.name)
    provision.wait_ready(ctx, adapter, target.engine, target.name)


def _tar_stream(decoder, size):
    """A tar archive holding only ``dump.rdb`` of ``size`` bytes, produced piece by piece."""
    info = tarfile.TarInfo("dump.rdb")
    info.size, info.mode, info.mtime = size, 0o644, int(time.time())
    yield info.tobuf(format=tarfile.USTAR_FORMAT)
    sent = 0
    for chunk in decoder.chunks():
        sent += len(chunk)
        if sent > size:
            raise AgentError("integrity_error", "backup is larger than its manifest says")
        yield chunk
    if sent != size:
        raise AgentError("integrity_error", f"restored {sent} bytes, the manifest says {size}")
    yield b"\0" * ((-size) % tarfile.BLOCKSIZE) + b"\0" * (2 * tarfile.BLOCKSIZE)


def recover(docker, record):
    """Restart recovery of an interrupted restore (docs/operations.md "Restart recovery"):
    the database container runs again (redis was stopped for the restore). Returns
    ``(status, message, details)`` for ``update_service_status`` and the call's answer:
    ``running`` when the data was not touched yet, else ``failed`` naming the safety backup
    that holds the previous data. Raises AgentError when Docker cannot be reached."""
    name = record.get("container") or f"pulseup-db-{record['service_uid']}"
    details, started = {}, _ensure_running(docker, name)
    safety = record.get("safety_backup_path")
    if record.get("phase") not in ("restoring", "writing"):
        state = f"{name} runs" if started else f"{name} does not run"
        return ("running" if started else "failed",
                f"database restore interrupted before the data was changed; {state}", details)
    details["safety_backup_path"] = safety
    keeps = (f"the safety backup {safety} holds the data from before the restore" if safety
             else "no safety backup was taken (safety_backup=false)")
    state = "" if started else f"; {name} does not run"
    return "failed", f"database restore interrupted while writing: the data may be partly restored; {keeps}{state}", \
        details


def _ensure_running(docker, name):
    container = docker.find_container(name)
    if container is None:
        return False
    if container.attrs.get("State", {}).get("Status") != "running":
        with translate(f"start {name}"):
            container.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            container.reload()
            if container.attrs.get("State", {}).get("Status") == "running":
                break
            gevent.sleep(0.5)
    return container.attrs.get("State", {}).get("Status") == "running"
