"""The backup pipeline against a scripted engine: files, manifest, events, failures, restore feed."""
import hashlib
import json
import os
import socket
import stat
import struct

import gevent
import pytest
import zstandard

from agent import config
from agent.errors import AgentError
from agent.protocol.events import CATALOGUE
from agent.services.context import CallContext
from agent.services.backups import manifest, pipeline as backup
from agent.services.database import engines, restore
from agent.services.backups.pipeline import BackupJob
from agent.services.database.target import DatabaseTarget

# -- a hand-written fake of the Docker exec API --------------------------------------------
# Exec output travels over a real socketpair framed as Docker's attach protocol (8-byte
# header: stream, 3 zero bytes, big-endian length), so the service's demultiplexer, stdin
# writer and pipeline run for real; only the engine is scripted.


def frame(stream, data):
    return struct.pack(">BxxxL", stream, len(data)) + data


class FakeExec:
    def __init__(self, script, frames, exit_code, consume_stdin):
        self.script = script
        self.frames = frames
        self.exit_code = exit_code
        self.consume_stdin = consume_stdin
        self.stdin = bytearray()
        self.done = False


class FakeApi:
    """``responder(script) -> (frames, exit_code)``; frames = [(1|2, bytes)]."""

    def __init__(self, responder):
        self.responder = responder
        self.execs = []

    def exec_create(self, container, cmd, stdout=True, stderr=True, stdin=False):
        frames, code = self.responder(cmd[2])
        self.execs.append(FakeExec(cmd[2], frames, code, stdin))
        return {"Id": str(len(self.execs) - 1)}

    def exec_start(self, exec_id, socket=False):
        job = self.execs[int(exec_id)]
        ours, theirs = _socketpair()
        gevent.spawn(self._serve, job, theirs)
        return socket_io(ours)

    def _serve(self, job, sock):
        try:
            if job.consume_stdin:
                while True:
                    data = sock.recv(65536)
                    if not data:
                        break
                    job.stdin += data
            for stream, data in job.frames:
                sock.sendall(frame(stream, data))
        finally:
            job.done = True
            sock.close()

    def exec_inspect(self, exec_id):
        job = self.execs[int(exec_id)]
        return {"Running": not job.done, "ExitCode": job.exit_code if job.done else None}


def _socketpair():
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def socket_io(sock):
    """What docker-py's exec_start(socket=True) returns for a unix socket: a SocketIO."""
    return socket.SocketIO(sock, "rwb")


class FakeAdapter:
    def __init__(self, responder):
        self.api = FakeApi(responder)

    def run(self, container, script, timeout=60.0):
        from agent.services.docker import exec as docker_exec
        return docker_exec.run(self, container, script, timeout)


def make_target(engine="postgresql", uid="svc1", running=True, env=None):
    env = env or {"POSTGRES_USER": "admin", "POSTGRES_PASSWORD": "pw-secret-1", "POSTGRES_DB": "app"}
    info = {"Id": "c" * 64, "State": {"Running": running},
            "Config": {"Image": "postgres:16", "Env": [f"{k}={v}" for k, v in env.items()],
                       "Labels": {"pulseup.managed": "true", "pulseup.database_type": engine,
                                  "pulseup.database_name": "app"}}}
    return DatabaseTarget(uid, f"pulseup-db-{uid}", engines.get(engine), info)


DUMP = b"".join(b"row %d some data\n" % i for i in range(200_000))  # ~3.5 MB


@pytest.fixture
def cfg(tmp_path):
    return config.defaults().replace(pulseup_backup_dir=str(tmp_path / "backups"))


@pytest.fixture
def events():
    return []


@pytest.fixture
def ctx(events):
    return CallContext(None, "database.backup.create", emit=lambda e, d: events.append((e, d, CATALOGUE[e].durable)))


def responder(dump_frames, code=0, version=b"15.8\n"):
    def respond(script):
        if "server_version" in script:
            return [(1, version)], 0
        return dump_frames, code
    return respond


def chunks(data, size=32768, stream=1):
    return [(stream, data[i:i + size]) for i in range(0, len(data), size)]


def test_backup_writes_compressed_file_and_manifest(cfg, ctx, events):
    adapter = FakeAdapter(responder(chunks(DUMP)))
    result = backup.run(ctx, adapter, cfg, make_target(), BackupJob("svc1", "b-1"))
    path = result["backup_path"]
    with open(path, "rb") as f:
        stored = f.read()
    assert zstandard.ZstdDecompressor().decompressobj().decompress(stored) == DUMP
    assert result["sha256"] == hashlib.sha256(stored).hexdigest()
    assert result["size"] == len(DUMP) and result["compressed_size"] == len(stored)
    assert result["engine_version"] == "15.8" and result["format"] == "pg_custom"
    assert manifest.BACKUP_NAME.match(os.path.basename(path)) and path.endswith(".dump.zst")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    with open(path + ".json") as f:
        saved = json.load(f)
    assert saved["sha256"] == result["sha256"] and saved["database"] == "app" and saved["warnings"] == []
    assert saved["created_by"].startswith("pulseup-agent/") and saved["image"] == "postgres:16"
    statuses = [d["status"] for e, d, _ in events if e == "backup_status_update"]
    assert statuses == ["in_progress", "completed"]
    percents = [d["percent"] for e, d, durable in events if e == "backup_progress_update" and not durable]
    assert percents[0] == 5 and percents[-1] == 100
    # the dump script references credentials only through the container's variables
    dump_script = adapter.api.execs[-1].script
    assert "pw-secret-1" not in dump_script and "$POSTGRES_PASSWORD" in dump_script


def test_gzip_backup(cfg, ctx):
    import gzip
    result = backup.run(ctx, FakeAdapter(responder(chunks(DUMP))), cfg, make_target(),
                        BackupJob("svc1", "g", compression="gzip", format="plain"))
    assert result["backup_path"].endswith(".sql.gz")
    with gzip.open(result["backup_path"]) as f:
        assert f.read() == DUMP


def test_nonzero_exit_leaves_nothing_and_redacts(cfg, ctx, events):
    frames = chunks(DUMP[:100000]) + [(2, b"pg_dump: error: password authentication failed pw-secret-1\n")]
    with pytest.raises(AgentError) as err:
        backup.run(ctx, FakeAdapter(responder(frames, code=1)), cfg, make_target(),
                   BackupJob("svc1", "bad"))
    assert err.value.code == "command_failed" and err.value.details["exit_code"] == 1
    assert "password authentication failed" in err.value.details["stderr_tail"]
    assert os.listdir(os.path.join(cfg.pulseup_backup_dir, "svc1")) == []
    last = [d for e, d, _ in events if e == "backup_status_update"][-1]
    assert last["status"] == "failed" and last["error_code"] == "command_failed"


def test_stderr_tail_hides_registered_secrets(cfg, ctx):
    ctx.secret("pw-secret-1")
    try:
        with pytest.raises(AgentError) as err:
            backup.run(ctx, FakeAdapter(responder([(2, b"bad password pw-secret-1\n")], code=2)), cfg,
                       make_target(), BackupJob("svc1", "bad"))
        assert "pw-secret-1" not in err.value.details["stderr_tail"]
        assert "***" in err.value.details["stderr_tail"]
    finally:
        ctx.close()


def test_empty_output_fails(cfg, ctx):
    with pytest.raises(AgentError) as err:
        backup.run(ctx, FakeAdapter(responder([], code=0)), cfg, make_target(), BackupJob("svc1", "e"))
    assert err.value.code == "command_failed" and "no output" in err.value.message
    assert os.listdir(os.path.join(cfg.pulseup_backup_dir, "svc1")) == []


def test_stderr_alone_is_a_warning_in_the_manifest(cfg, ctx):
    frames = [(2, b"warning: something odd\n")] + chunks(DUMP)
    result = backup.run(ctx, FakeAdapter(responder(frames)), cfg, make_target(), BackupJob("svc1", "w"))
    with open(result["manifest_path"]) as f:
        assert json.load(f)["warnings"] == ["warning: something odd"]


def test_same_second_gets_a_suffix(cfg, ctx, monkeypatch):
    monkeypatch.setattr(backup.time, "time", lambda: 1_700_000_000.0)
    names = [os.path.basename(backup.run(ctx, FakeAdapter(responder(chunks(DUMP))), cfg, make_target(),
                                         BackupJob("svc1", f"b{i}"))["backup_path"]) for i in range(3)]
    assert names == ["backup_20231114T221320Z.dump.zst", "backup_20231114T221320Z-2.dump.zst",
                     "backup_20231114T221320Z-3.dump.zst"]


def test_restore_feeds_decompressed_dump_to_stdin(cfg, ctx, events):
    made = backup.run(ctx, FakeAdapter(responder(chunks(DUMP))), cfg, make_target(), BackupJob("svc1", "b"))
    adapter = FakeAdapter(lambda script: ([(2, b"restoring\n")], 0))
    reply = restore.run(ctx, adapter, cfg, make_target(), made["backup_path"], safety_backup=False)
    job = adapter.api.execs[-1]
    assert bytes(job.stdin) == DUMP and "pg_restore" in job.script and "--single-transaction" in job.script
    assert reply["backup_uid"] == "b" and "safety_backup_path" not in reply
    statuses = [d["status"] for e, d, _ in events if e == "update_service_status"]
    assert statuses == ["deploying", "running"]


def test_restore_tool_failure_is_command_failed(cfg, ctx, events):
    made = backup.run(ctx, FakeAdapter(responder(chunks(DUMP))), cfg, make_target(), BackupJob("svc1", "b"))
    adapter = FakeAdapter(lambda script: ([(2, b"ERROR: relation exists\n")], 1))
    with pytest.raises(AgentError) as err:
        restore.run(ctx, adapter, cfg, make_target(), made["backup_path"], safety_backup=False)
    assert err.value.code == "command_failed" and err.value.message.startswith("Database restore failed:")
    assert [d for e, d, _ in events if e == "update_service_status"][-1]["status"] == "failed"


def test_restore_of_other_engine_backup_is_refused(cfg, ctx):
    made = backup.run(ctx, FakeAdapter(responder(chunks(DUMP))), cfg, make_target(), BackupJob("svc1", "b"))
    redis_target = make_target("redis", env={"REDIS_PASSWORD": "x"})
    with pytest.raises(AgentError) as err:
        restore.run(ctx, FakeAdapter(responder([])), cfg, redis_target, made["backup_path"])
    assert err.value.code == "failed_precondition"


def test_cancelled_backup_leaves_nothing(cfg, ctx, events):
    class Slow(FakeApi):
        def _serve(self, job, sock):
            try:
                for stream, data in job.frames:
                    sock.sendall(frame(stream, data))
                    gevent.sleep(0.01)
            finally:
                job.done = True
                sock.close()

    adapter = FakeAdapter(responder(chunks(DUMP, 8192)))
    adapter.api = Slow(adapter.api.responder)
    worker = gevent.spawn(backup.run, ctx, adapter, cfg, make_target(), BackupJob("svc1", "c"))
    directory = os.path.join(cfg.pulseup_backup_dir, "svc1")
    while not (os.path.isdir(directory) and os.listdir(directory)):
        gevent.sleep(0.01)
    worker.kill()  # what the dispatcher does on cancel: GreenletExit at a blocking point
    assert os.listdir(directory) == []
    last = [d for e, d, _ in events if e == "backup_status_update"][-1]
    assert last["status"] == "failed" and last["error_code"] == "cancelled"
