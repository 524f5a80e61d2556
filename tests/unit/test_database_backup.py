"""The backup pipeline against a scripted engine: files, manifest, events, failures, restore feed."""
import hashlib
import json
import os
import stat

import pytest
import zstandard
from dbfakes import FakeAdapter, make_target

from agent import config
from agent.errors import AgentError
from agent.handlers.context import CallContext
from agent.services.database import backup, manifest, restore
from agent.services.database.backup import BackupJob

DUMP = b"".join(b"row %d some data\n" % i for i in range(200_000))  # ~3.5 MB


@pytest.fixture
def cfg(tmp_path):
    return config.defaults().replace(pulseup_backup_dir=str(tmp_path / "backups"))


@pytest.fixture
def events():
    return []


@pytest.fixture
def ctx(events):
    return CallContext(None, "database.backup.create", emit=lambda e, d, durable: events.append((e, d, durable)))


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
