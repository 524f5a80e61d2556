"""PostgreSQL: deploy, write, back up, change, restore; the file also restores with pg_restore."""
import os
import subprocess

import pytest
from helpers import PASSWORD, decompress, psql

from agent.errors import AgentError
from agent.services.backups.pipeline import BackupJob
from agent.services.database.provision import DeployRequest

ROWS_SQL = "SELECT id, name, amount FROM items ORDER BY id"


def deploy(recorder, uid, **kwargs):
    return recorder.services.database.deploy(recorder.ctx(), DeployRequest(uid, "postgresql", PASSWORD, **kwargs))


@pytest.fixture
def pg(recorder, uid_factory, docker_client):
    uid = uid_factory("pg")
    reply = deploy(recorder, uid)
    psql(docker_client, uid, "CREATE TABLE items (id int PRIMARY KEY, name text, amount numeric);"
                             "INSERT INTO items SELECT g, 'item ' || g || E'\\tq''uote', g * 1.5 "
                             "FROM generate_series(1, 500) g")
    return uid, reply


def test_deploy_reply_and_container(pg, docker_client):
    uid, reply = pg
    assert reply["status"] == "success" and reply["already_exists"] is False
    assert reply["type"] == "postgresql" and reply["username"] == "admin" and reply["database"] == "app"
    assert reply["bind_address"] == "127.0.0.1" and reply["public"] is False
    assert reply["internal_host"] == f"pulseup-db-{uid}" and reply["internal_port"] == 5432
    assert reply["volume_path"] == f"pulseup-db-vol-{uid}"
    info = docker_client.api.inspect_container(f"pulseup-db-{uid}")
    labels = info["Config"]["Labels"]
    assert labels["pulseup.managed"] == "true" and labels["pulseup.database_type"] == "postgresql"
    assert labels["pulseup.database_name"] == "app" and labels["pulseup.service_uid"] == uid
    assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert info["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}
    assert "pulseup-net" in info["NetworkSettings"]["Networks"]
    binding = info["HostConfig"]["PortBindings"]["5432/tcp"][0]
    assert binding == {"HostIp": "127.0.0.1", "HostPort": str(reply["port"])}
    volume = docker_client.api.inspect_volume(f"pulseup-db-vol-{uid}")
    assert volume["Labels"]["pulseup.component"] == "database" and volume["Labels"]["pulseup.type"] == "data"
    # published for real: the server answers with the password through the host port
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(reply["port"]), "-U", "admin", "-d", "app",
                          "-tAc", "SELECT count(*) FROM items"], capture_output=True, text=True,
                         env={"PGPASSWORD": PASSWORD, "PATH": os.environ["PATH"]}, timeout=30)
    assert out.stdout.strip() == "500", out.stderr


def test_deploy_again_reports_existing(pg, recorder):
    uid, first = pg
    again = deploy(recorder, uid)
    assert again["already_exists"] is True and again["port"] == first["port"]
    with pytest.raises(AgentError) as err:
        recorder.services.database.deploy(recorder.ctx(), DeployRequest(uid, "redis", PASSWORD))
    assert err.value.code == "conflict"


def test_backup_change_restore_round_trip(pg, recorder, docker_client, backup_dir):
    uid, _ = pg
    before = psql(docker_client, uid, ROWS_SQL)
    result = recorder.services.backups.create(recorder.ctx(), BackupJob(uid, "b1"))
    assert result["format"] == "pg_custom" and result["backup_path"].endswith(".dump.zst")
    assert result["engine_version"].startswith("15")
    psql(docker_client, uid, "DELETE FROM items WHERE id > 100; UPDATE items SET name = 'changed';"
                             "CREATE TABLE extra (x int)")
    assert psql(docker_client, uid, ROWS_SQL) != before
    reply = recorder.services.database.restore(recorder.ctx(), uid, backup_uid="b1")
    assert psql(docker_client, uid, ROWS_SQL) == before
    assert reply["safety_backup_path"].startswith(os.path.join(backup_dir, uid))
    statuses = [e["status"] for e in recorder.of("update_service_status")]
    assert statuses[-2:] == ["deploying", "running"]
    backups = recorder.services.backups.list(uid)
    assert [b["backup_type"] for b in backups] == ["pre_restore", "manual"]


def test_plain_gzip_backup_restores(pg, recorder, docker_client):
    uid, _ = pg
    before = psql(docker_client, uid, ROWS_SQL)
    result = recorder.services.backups.create(
        recorder.ctx(), BackupJob(uid, "plain1", format="plain", compression="gzip"))
    assert result["backup_path"].endswith(".sql.gz") and result["format"] == "pg_plain"
    psql(docker_client, uid, "TRUNCATE items")
    recorder.services.database.restore(recorder.ctx(), uid, backup_path=os.path.basename(result["backup_path"]),
                                       safety_backup=False)
    assert psql(docker_client, uid, ROWS_SQL) == before


def test_backup_restores_with_pg_restore_outside_the_agent(pg, recorder, docker_client, postgres_server, tmp_path):
    uid, _ = pg
    before = psql(docker_client, uid, ROWS_SQL)
    result = recorder.services.backups.create(recorder.ctx(), BackupJob(uid, "outside"))
    dump = tmp_path / "app.dump"
    dump.write_bytes(decompress(result["backup_path"]))
    postgres_server.psql("DROP DATABASE IF EXISTS outside_copy", database="postgres")
    postgres_server.psql("CREATE DATABASE outside_copy", database="postgres")
    subprocess.run([os.path.join(postgres_server.bin_dir, "pg_restore"), "--no-owner", "-h", postgres_server.host,
                    "-p", str(postgres_server.port), "-U", postgres_server.user, "-d", "outside_copy", str(dump)],
                   check=True, capture_output=True, timeout=120,
                   env={"PGPASSWORD": postgres_server.password, "PATH": os.environ["PATH"]})
    assert postgres_server.psql(ROWS_SQL, database="outside_copy") == before
