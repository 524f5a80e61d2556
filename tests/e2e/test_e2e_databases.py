"""database.* through the wire (docs/commands.md, "Databases") on one PostgreSQL container (the stand-in of the
official image, tests/integration/db/dbimages.py): provisioning, logs, backup, list, restore,
upload to the control plane over mTLS, automation and storage checks."""

import hashlib
import json
import os
import re

import pytest

from tests.e2e.apps import unique
from tests.e2e.wire import RFC3339

covers = pytest.mark.covers
PASSWORD = "e2e-Pw_" + os.urandom(4).hex()


def psql(docker_client, uid, sql):
    result = docker_client.containers.get(f"pulseup-db-{uid}").exec_run(
        ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "admin", "-d", "app", "-c", sql], demux=True)
    out, err = result.output
    assert result.exit_code == 0, (err or b"").decode()
    return (out or b"").decode().strip()


@pytest.fixture(scope="module")
def db(wire):
    uid = unique("e2e-pg")
    mark = wire.mark()
    reply = wire.call("database.deploy", {"service_uid": uid, "type": "PostgreSQL", "password": PASSWORD},
                      timeout=300)
    assert reply["success"] is True, reply
    wire.wait_event("update_service_status", lambda e: e["service_uid"] == uid and e["status"] == "running", mark)
    events = wire.events("update_service_status", mark, lambda e: e["service_uid"] == uid)
    yield uid, reply["data"], events
    wire.call("service.delete", {"service_uid": uid, "delete_volumes": True, "delete_backups": True}, timeout=120)


@pytest.fixture(scope="module")
def backup(db, wire, docker_client):
    """One manual backup of a table holding one row."""
    uid = db[0]
    psql(docker_client, uid, "CREATE TABLE notes (body text); INSERT INTO notes VALUES ('kept');")
    mark = wire.mark()
    data = wire.ok("database.backup.create", {"service_uid": uid, "backup_uid": f"{uid}-b1"}, timeout=300)
    return data, mark


@covers("database.deploy", outcome="success")
def test_deploy_reply_events_and_idempotence(db, wire, docker_client):
    uid, data, events = db
    name = f"pulseup-db-{uid}"
    assert data["status"] == "success" and data["message"] and data["name"] == name
    assert data["type"] == "postgresql" and data["username"] == "admin" and data["database"] == "app"
    assert data["volume_path"] == f"pulseup-db-vol-{uid}" and data["bind_address"] == "127.0.0.1"
    assert data["internal_host"] == name and data["internal_port"] == 5432 and data["public"] is False
    assert data["already_exists"] is False and 5432 <= data["port"] <= 65535
    details = data["details"]
    for key in ("container_id", "name", "port", "type", "username", "database", "volume_path"):
        assert details[key] == data[key], key
    assert re.match(r"^dep_\d+$", details["deployment_uid"])
    container = docker_client.containers.get(name)
    assert container.id == data["container_id"] and container.labels["pulseup.database_type"] == "postgresql"
    assert container.attrs["HostConfig"]["PortBindings"]["5432/tcp"] == [{"HostIp": "127.0.0.1",
                                                                         "HostPort": str(data["port"])}]
    assert psql(docker_client, uid, "SELECT 1") == "1"
    # the container event watcher may report the start too (its own suppression of repeats)
    assert events[0]["status"] == "deploying" and {e["status"] for e in events[1:]} == {"running"}, events
    again = wire.ok("database.deploy", {"service_uid": uid, "type": "postgresql", "password": "other-pw"},
                    timeout=120)
    assert again["already_exists"] is True and again["container_id"] == data["container_id"]


@covers("database.deploy", outcome="refusal")
def test_deploy_refusals(db, wire):
    uid, data, _ = db
    other = unique("e2e-pg")
    wire.refused("database.deploy", {"service_uid": other, "type": "oracle", "password": "x"}, "invalid_argument",
                 field="type")
    wire.refused("database.deploy", {"service_uid": other, "type": "mysql", "password": "x", "username": "root"},
                 "invalid_argument", field="username")
    wire.refused("database.deploy", {"service_uid": other, "type": "redis", "password": "a\nb"}, "invalid_argument",
                 field="password")
    taken = wire.refused("database.deploy", {"service_uid": other, "type": "postgresql", "password": "x",
                                             "port": data["port"]}, "conflict", timeout=120)
    assert f"port {data['port']} is already in use" in taken["error"]
    wire.refused("database.deploy", {"service_uid": uid, "type": "redis", "password": "x"}, "conflict", timeout=120)


@covers("agent.command.execute", outcome="success")
def test_volume_prune_keeps_the_database_volume(db, wire, docker_client):
    """docs/commands.md, "Agent commands": prunes always exclude pulseup.component=database volumes."""
    stray = docker_client.volumes.create(unique("e2e-stray"))
    wire.ok("service.stop", {"service_uid": db[0]}, timeout=120)      # its volume is now unused
    try:
        data = wire.ok("agent.command.execute", {"command_id": "docker.prune_volumes", "confirm": True})
        assert data["exit_code"] == 0
        names = {v.name for v in docker_client.volumes.list()}
        assert f"pulseup-db-vol-{db[0]}" in names and stray.name not in names
    finally:
        wire.ok("service.start", {"service_uid": db[0]}, timeout=120)
    assert psql(docker_client, db[0], "SELECT 1") == "1"


@covers("database.logs.fetch", outcome="success")
def test_database_logs(db, wire):
    data = wire.ok("database.logs.fetch", {"service_uid": db[0], "lines": 20})
    assert set(data) == {"logs", "container", "truncated"} and data["container"] == f"pulseup-db-{db[0]}"
    assert 0 < len(data["logs"]) <= 20 and any("database system is ready" in line for line in data["logs"])


@covers("database.logs.fetch", "database.backup.create", "database.backup.list", outcome="refusal")
def test_database_read_and_backup_refusals(db, wire):
    nothing = unique("e2e-none")
    wire.refused("database.logs.fetch", {"service_uid": nothing}, "not_found")
    wire.refused("database.logs.fetch", {"service_uid": db[0], "lines": 0}, "invalid_argument", field="lines")
    wire.refused("database.backup.create", {"service_uid": nothing, "backup_uid": "b-1"}, "not_found", timeout=120)
    wire.refused("database.backup.create", {"service_uid": db[0], "backup_uid": "b-2", "format": "tar"},
                 "invalid_argument", field="format")
    wire.refused("database.backup.list", {"service_uid": "../x"}, "invalid_argument", field="service_uid")


@covers("database.backup.create", outcome="success")
def test_backup_reply_file_manifest_and_events(db, backup, wire, e2e_agent):
    uid, (data, mark) = db[0], backup
    path = data["backup_path"]
    assert data["status"] == "success" and data["message"] and data["backup_uid"] == f"{uid}-b1"
    assert os.path.dirname(path) == os.path.join(e2e_agent.env["PULSEUP_BACKUP_DIR"], uid)
    assert re.match(r"^backup_\d{8}T\d{6}Z\.dump\.zst$", os.path.basename(path))
    assert data["manifest_path"] == path + ".json" and data["compression"] == "zstd"
    assert data["database"] == uid and data["database_name"] == "app" and data["type"] == "postgresql"
    assert data["format"] == "pg_custom" and data["engine_version"] and data["size"] > 0
    with open(path, "rb") as handle:
        stored = handle.read()
    assert data["compressed_size"] == len(stored) and data["sha256"] == hashlib.sha256(stored).hexdigest()
    assert os.stat(path).st_mode & 0o777 == 0o600 and re.match(RFC3339, data["created_at"])
    with open(data["manifest_path"]) as handle:
        manifest = json.load(handle)
    assert manifest["backup_uid"] == data["backup_uid"] and manifest["sha256"] == data["sha256"]
    assert manifest["backup_type"] == "manual" and manifest["created_by"].startswith("pulseup-agent/")
    statuses = wire.wait_events("backup_status_update", lambda e: e["backup_uid"] == data["backup_uid"], mark, count=2)
    assert [e["status"] for e in statuses] == ["in_progress", "completed"]
    done = statuses[-1]
    assert done["file_path"] == path and done["file_size"] == len(stored) and done["sha256"] == data["sha256"]
    assert done["size"] == data["size"] and done["manifest_path"] == data["manifest_path"]
    progress = wire.events("backup_progress_update", mark, lambda e: e["backup_uid"] == data["backup_uid"])
    assert progress and progress[-1]["percent"] == 100 and all(e["status"] == "in_progress" for e in progress)


@covers("database.backup.list", outcome="success")
def test_backup_list(db, backup, wire):
    data = wire.ok("database.backup.list", {"service_uid": db[0]})
    assert data["status"] == "success" and data["count"] == len(data["backups"]) >= 1
    entry = next(e for e in data["backups"] if e["backup_uid"] == backup[0]["backup_uid"])
    assert entry["backup_path"] == backup[0]["backup_path"] and entry["database"] == db[0]
    assert entry["type"] == "sql" and entry["engine"] == "postgresql" and entry["format"] == "pg_custom"
    assert entry["legacy"] is False and entry["compressed_size"] == backup[0]["compressed_size"]
    assert wire.ok("database.backup.list", {"service_uid": unique("e2e-none")}) == {"status": "success",
                                                                                    "backups": [], "count": 0}


@covers("database.backup.restore", outcome="success")
def test_restore_brings_the_row_back_after_a_safety_backup(db, backup, wire, docker_client):
    uid = db[0]
    psql(docker_client, uid, "DELETE FROM notes; INSERT INTO notes VALUES ('changed');")
    mark = wire.mark()
    data = wire.ok("database.backup.restore", {"service_uid": uid, "backup_uid": backup[0]["backup_uid"]},
                   timeout=300)
    assert data["status"] == "success" and data["message"] and data["backup_uid"] == backup[0]["backup_uid"]
    assert data["backup_path"] == backup[0]["backup_path"] and data["duration_seconds"] > 0
    assert os.path.basename(data["safety_backup_path"]).startswith("backup_")
    assert psql(docker_client, uid, "SELECT body FROM notes") == "kept"
    statuses = wire.wait_events("update_service_status", lambda e: e["service_uid"] == uid, mark, count=2)
    assert [e["status"] for e in statuses] == ["deploying", "running"]
    assert statuses[0]["message"] == "Restoring database from backup"
    safety = wire.events("backup_status_update", mark, lambda e: e["service_uid"] == uid)
    assert [e["backup_type"] for e in safety] == ["pre_restore", "pre_restore"]
    assert re.match(r"^prerestore-[0-9a-f-]{36}$", safety[0]["backup_uid"])


@covers("database.backup.restore", outcome="refusal")
def test_restore_refusals(db, backup, wire, e2e_agent):
    uid = db[0]
    wire.refused("database.backup.restore", {"service_uid": uid, "backup_path": "/etc/passwd"}, "invalid_argument",
                 contains=f"backup_path is outside the backup directory of service {uid}", timeout=120)
    wire.refused("database.backup.restore", {"service_uid": uid}, "invalid_argument", timeout=120)
    wire.refused("database.backup.restore", {"service_uid": uid, "backup_uid": "never-made"}, "not_found",
                 timeout=120)


@covers("database.backup.restore", "database.backup.download", outcome="refusal")
def test_a_tampered_backup_is_neither_restored_nor_uploaded(db, backup, wire, docker_client):
    """The stored file no longer matches its manifest's sha256: integrity_error, the database
    untouched, nothing uploaded."""
    uid, made = db[0], backup[0]
    with open(made["backup_path"], "rb") as handle:
        original = handle.read()
    psql(docker_client, uid, "DELETE FROM notes; INSERT INTO notes VALUES ('current');")
    mark = wire.mark()
    try:
        with open(made["backup_path"], "r+b") as handle:
            handle.seek(len(original) // 2)
            handle.write(bytes([original[len(original) // 2] ^ 0xFF]))
        wire.refused("database.backup.restore", {"service_uid": uid, "backup_uid": made["backup_uid"],
                                                 "safety_backup": False}, "integrity_error", timeout=120)
        wire.refused("database.backup.download", {"service_uid": uid, "backup_uid": made["backup_uid"]},
                     "integrity_error", timeout=120)
    finally:
        with open(made["backup_path"], "wb") as handle:
            handle.write(original)
    assert psql(docker_client, uid, "SELECT body FROM notes") == "current"
    assert [e["status"] for e in wire.events("update_service_status", mark, lambda e: e["service_uid"] == uid)] == []


@covers("database.backup.download", outcome="success")
def test_upload_to_the_control_plane(db, backup, wire, devserver, e2e_agent):
    uid, made = db[0], backup[0]
    mark = wire.mark()
    data = wire.ok("database.backup.download", {"service_uid": uid, "backup_uid": made["backup_uid"]}, timeout=300)
    assert data["status"] == "success" and data["message"] and data["backup_uid"] == made["backup_uid"]
    assert data["backup_path"] == made["backup_path"] and data["service_uid"] == uid
    assert data["bytes_sent"] == made["compressed_size"] and data["sha256"] == made["sha256"]
    stored = os.path.join(devserver.data_dir, "uploads", e2e_agent.uid, made["backup_uid"],
                          os.path.basename(made["backup_path"]))
    with open(stored, "rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == made["sha256"]
    statuses = wire.wait_events("backup_download_status", lambda e: e["backup_uid"] == made["backup_uid"]
                                and e["status"] != "uploading", mark)
    assert statuses[-1]["status"] == "upload_completed" and statuses[-1]["service_uid"] == uid
    assert wire.events("backup_download_status", mark)[0]["status"] == "uploading"


@covers("database.backup.download", outcome="refusal")
def test_upload_refusals(db, wire):
    wire.refused("database.backup.download", {"service_uid": db[0], "backup_uid": "never-made"}, "not_found",
                 timeout=120)
    wire.refused("database.backup.download", {"service_uid": db[0], "backup_uid": "x",
                                              "backup_path": "/etc/shadow"}, "invalid_argument", timeout=120)


@covers("database.backup.automation.update", "database.backup.automation.get", outcome="success")
def test_automation_update_and_get(db, wire, e2e_agent):
    uid = db[0]
    assert wire.ok("database.backup.automation.get", {"service_uid": uid}) == {"enabled": False}
    storage = os.path.join(e2e_agent.env["PULSEUP_BACKUP_STORAGE_ROOTS"].split(":")[1], uid)
    request = {"service_uid": uid, "enabled": True, "cron_expression": "30 3 * * *", "timezone": "Europe/Paris",
               "storage_path": storage, "retention_days": 7}
    data = wire.ok("database.backup.automation.update", request)
    assert data["status"] == "ok" and data["enabled"] is True and data["cron_expression"] == "30 3 * * *"
    assert data["timezone"] == "Europe/Paris" and data["storage_path"] == storage and data["retention_days"] == 7
    assert re.match(RFC3339, data["next_run_at"])
    got = wire.ok("database.backup.automation.get", {"service_uid": uid})
    for key in ("enabled", "cron_expression", "timezone", "storage_path", "retention_days", "next_run_at"):
        assert got[key] == data[key], key
    state = os.path.join(e2e_agent.env["STATE_DIR"], "backup-automation", f"{uid}.json")
    assert os.stat(state).st_mode & 0o777 == 0o600
    off = wire.ok("database.backup.automation.update", {"service_uid": uid, "enabled": False})
    assert off["enabled"] is False
    assert wire.ok("database.backup.automation.get", {"service_uid": uid})["enabled"] is False


@covers("database.backup.automation.update", "database.backup.automation.get", outcome="refusal")
def test_automation_refusals(db, wire):
    uid = db[0]
    wire.refused("database.backup.automation.update", {"service_uid": uid, "enabled": True,
                                                       "cron_expression": "61 * * * *"}, "invalid_argument")
    wire.refused("database.backup.automation.update", {"service_uid": uid, "enabled": True,
                                                       "cron_expression": "@daily", "timezone": "Mars/Olympus"},
                 "invalid_argument")
    wire.refused("database.backup.automation.update", {"service_uid": uid, "enabled": True,
                                                       "cron_expression": "@daily", "storage_path": "/etc"},
                 "invalid_argument")
    wire.refused("database.backup.automation.get", {"service_uid": "bad/uid"}, "invalid_argument",
                 field="service_uid")


@covers("database.backup.storage.verify", outcome="success")
def test_storage_verify_creates_and_probes_the_directory(db, wire, e2e_agent):
    root = e2e_agent.env["PULSEUP_BACKUP_STORAGE_ROOTS"].split(":")[1]
    target = os.path.join(root, "verify", db[0])
    data = wire.ok("database.backup.storage.verify", {"service_uid": db[0], "storage_path": target + "/"})
    assert data["status"] == "ok" and data["message"] and data["normalized_path"] == target
    assert isinstance(data["free_bytes"], int) and data["free_bytes"] > 0
    assert os.path.isdir(target) and os.stat(target).st_mode & 0o777 == 0o700 and os.listdir(target) == []
    relative = wire.ok("database.backup.storage.verify", {"service_uid": db[0], "storage_path": "relative-dir"})
    assert relative["normalized_path"] == os.path.join(e2e_agent.env["PULSEUP_BACKUP_DIR"], "relative-dir")


@covers("database.backup.storage.verify", outcome="refusal")
def test_storage_verify_refusals(db, wire, e2e_agent):
    root = e2e_agent.env["PULSEUP_BACKUP_STORAGE_ROOTS"].split(":")[1]
    outside = wire.refused("database.backup.storage.verify", {"service_uid": db[0], "storage_path": "/etc"},
                           "invalid_argument")
    assert outside["data"]["message"]
    escape = wire.refused("database.backup.storage.verify", {"service_uid": db[0],
                                                             "storage_path": root + "/../../etc"}, "invalid_argument")
    assert escape["data"]["message"]
    wire.refused("database.backup.storage.verify", {"service_uid": db[0]}, "invalid_argument", field="storage_path")
