"""Redis (real server) and MongoDB (named stand-in tools): deploy, write, back up, change, restore."""
import os
import shutil
import subprocess
import time

import pytest
from harness.process import free_port
from helpers import POPULATE_LUA, PASSWORD, decompress, exec_out, redis, redis_dump_all

from agent.errors import AgentError
from agent.services.backups.pipeline import BackupJob
from agent.services.database.provision import DeployRequest


@pytest.fixture
def rd(recorder, uid_factory, docker_client):
    uid = uid_factory("rd")
    recorder.services.database.deploy(recorder.ctx(), DeployRequest(uid, "redis", PASSWORD))
    redis(docker_client, uid, "SET", "plain", "value with spaces\ttab")
    redis(docker_client, uid, "HSET", "h", "a", "1", "b", "two")
    redis(docker_client, uid, "RPUSH", "l", "x", "y", "z")
    redis(docker_client, uid, "SADD", "s", "m1", "m2")
    redis(docker_client, uid, "EVAL", POPULATE_LUA, "0", "2000")
    return uid


def test_redis_round_trip(rd, recorder, docker_client):
    before = redis_dump_all(docker_client, rd)
    assert "h|hash|a,1,b,two" in before and before.count("|string|") == 2001
    result = recorder.services.backups.create(recorder.ctx(), BackupJob(rd, "r1"))
    assert result["format"] == "redis_rdb" and result["backup_path"].endswith(".rdb.zst")
    assert result["engine_version"].startswith("7.")
    redis(docker_client, rd, "FLUSHALL")
    redis(docker_client, rd, "SET", "new", "1")
    reply = recorder.services.database.restore(recorder.ctx(), rd, backup_uid="r1")
    assert redis_dump_all(docker_client, rd) == before
    assert "safety_backup_path" in reply
    # the password still protects the restarted server
    out = exec_out(docker_client, f"pulseup-db-{rd}", ["redis-cli", "PING"])
    assert "NOAUTH" in out


def test_rdb_loads_in_a_plain_redis_server_outside_the_agent(rd, recorder, docker_client, tmp_path):
    before = redis(docker_client, rd, "HGETALL", "h")
    result = recorder.services.backups.create(recorder.ctx(), BackupJob(rd, "outside"))
    (tmp_path / "dump.rdb").write_bytes(decompress(result["backup_path"]))
    shutil.chown(tmp_path, "redis") if os.geteuid() == 0 else None
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
                               "--dbfilename", "dump.rdb", "--save", ""], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ping = subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True, text=True)
            if ping.stdout.strip() == "PONG":
                break
            time.sleep(0.1)
        out = subprocess.run(["redis-cli", "-p", str(port), "HGETALL", "h"], capture_output=True, text=True)
        assert out.stdout == before
        size = subprocess.run(["redis-cli", "-p", str(port), "DBSIZE"], capture_output=True, text=True)
        assert size.stdout.strip() == "2004"
    finally:
        server.terminate()
        server.wait(10)


def test_redis_wrong_password_fails_and_keeps_earlier_backups(rd, recorder, docker_client):
    first = recorder.services.backups.create(recorder.ctx(), BackupJob(rd, "good"))
    redis(docker_client, rd, "CONFIG", "SET", "requirepass", "another-password")
    with pytest.raises(AgentError) as err:
        recorder.services.backups.create(recorder.ctx(), BackupJob(rd, "bad"))
    assert err.value.code == "command_failed" and err.value.details["exit_code"] != 0
    assert "another-password" not in str(err.value.details) and PASSWORD not in str(err.value.details)
    entries = recorder.services.backups.list(rd)
    assert [e["backup_uid"] for e in entries] == ["good"]
    assert sorted(os.listdir(os.path.dirname(first["backup_path"]))) == sorted(
        [os.path.basename(first["backup_path"]), os.path.basename(first["manifest_path"])])
    failed = recorder.of("backup_status_update")[-1]
    assert failed["status"] == "failed" and failed["error_code"] == "command_failed"


def test_mongodb_path_with_standin_tools(recorder, uid_factory, docker_client):
    uid = uid_factory("mg")
    reply = recorder.services.database.deploy(recorder.ctx(), DeployRequest(uid, "mongodb", PASSWORD))
    assert reply["username"] == "root" and reply["internal_port"] == 27017
    name = f"pulseup-db-{uid}"
    exec_out(docker_client, name, ["sh", "-c", "printf 'doc1\\ndoc2\\n' > /data/db/app/users; echo o > /data/db/app/orders"])
    result = recorder.services.backups.create(recorder.ctx(), BackupJob(uid, "g1"))
    assert result["format"] == "mongo_archive" and result["engine_version"] == "7.0.0-standin"
    exec_out(docker_client, name, ["sh", "-c", "echo changed > /data/db/app/users; rm /data/db/app/orders"])
    recorder.services.database.restore(recorder.ctx(), uid, backup_uid="g1", safety_backup=False)
    assert exec_out(docker_client, name, ["cat", "/data/db/app/users", "/data/db/app/orders"]) == "doc1\ndoc2\no\n"
