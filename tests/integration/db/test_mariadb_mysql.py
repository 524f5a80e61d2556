"""MariaDB and MySQL (the MySQL stand-in runs the MariaDB server with MYSQL_* variables and
mysql/mysqldump): deploy, write, back up, change, restore; the dump also loads with mariadb."""
import os
import subprocess

import pytest
from helpers import PASSWORD, decompress, mysql

from agent.services.backups.pipeline import BackupJob
from agent.services.database.provision import DeployRequest

ROWS_SQL = "SELECT id, name, HEX(blob_col) FROM items ORDER BY id"


@pytest.fixture(params=["mariadb", "mysql"])
def my(request, recorder, uid_factory, docker_client):
    uid = uid_factory(request.param[:5])
    reply = recorder.services.database.deploy(recorder.ctx(), DeployRequest(uid, request.param, PASSWORD))
    mysql(docker_client, uid,
          "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(80), blob_col VARBINARY(16));"
          "INSERT INTO items SELECT seq, CONCAT('row ', seq, ' it''s'), UNHEX(MD5(seq)) FROM seq_1_to_300;")
    return uid, reply, request.param


def test_round_trip(my, recorder, docker_client):
    uid, reply, engine = my
    assert reply["type"] == engine and reply["internal_port"] == 3306
    before = mysql(docker_client, uid, ROWS_SQL)
    result = recorder.services.backups.create(recorder.ctx(), BackupJob(uid, "m1"))
    assert result["format"] == "mysql_sql" and result["backup_path"].endswith(".sql.zst")
    assert "MariaDB" in result["engine_version"]
    mysql(docker_client, uid, "DELETE FROM items WHERE id % 2 = 0; UPDATE items SET name = 'x'")
    assert mysql(docker_client, uid, ROWS_SQL) != before
    recorder.services.database.restore(recorder.ctx(), uid, backup_uid="m1")
    assert mysql(docker_client, uid, ROWS_SQL) == before
    completed = [e for e in recorder.of("backup_status_update") if e["status"] == "completed"]
    assert {e["backup_type"] for e in completed} == {"manual", "pre_restore"}


def test_dump_loads_with_mariadb_client_outside_the_agent(my, recorder, docker_client, mariadb_server, tmp_path):
    uid, _, _ = my
    before = mysql(docker_client, uid, ROWS_SQL)
    result = recorder.services.backups.create(recorder.ctx(), BackupJob(uid, "outside"))
    sql = decompress(result["backup_path"])
    assert b"CREATE DATABASE" in sql and b"`app`" in sql
    mariadb_server.root_sql("DROP DATABASE IF EXISTS app")
    subprocess.run(["mariadb", "--no-defaults", "-S", mariadb_server.socket_path, "-u", "root"],
                   input=sql, check=True, capture_output=True, timeout=120)
    assert mariadb_server.sql(ROWS_SQL, database="app") == before
    mariadb_server.root_sql("DROP DATABASE app")
    assert os.path.exists(result["manifest_path"])
