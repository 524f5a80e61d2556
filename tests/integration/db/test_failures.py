"""Failures leave earlier backups intact and answer with a clear error and the right code:
a stopped container, a failing dump, a full disk, a tampered file, a path outside the
backup directory, a legacy file."""
import os
import subprocess
import uuid

import pytest
from helpers import PASSWORD, psql

from agent.errors import AgentError
from agent.services.context import CallContext
from agent.services.backups.pipeline import BackupJob
from agent.services.database.provision import DeployRequest


@pytest.fixture(scope="module")
def deployed(docker_host, db_images, test_network, tmp_path_factory, docker_client):
    """One PostgreSQL container for the module (first start is the slow part); tests that
    stop it start it again."""
    from agent import config
    from agent.services import Services

    cfg = config.defaults().replace(docker_host=docker_host, db_image_postgresql=db_images["postgresql"],
                                    db_image_pull="never",
                                    pulseup_backup_dir=str(tmp_path_factory.mktemp("deploy-backups")))
    services = Services(cfg)
    uid = f"pgf-{uuid.uuid4().hex[:8]}"
    ctx = CallContext(services, "test", emit=lambda *a: None)
    services.database.deploy(ctx, DeployRequest(uid, "postgresql", PASSWORD))
    psql(docker_client, uid, "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g")
    try:
        yield uid
    finally:
        services.close()
        docker_client.containers.get(f"pulseup-db-{uid}").remove(force=True, v=True)
        docker_client.volumes.get(f"pulseup-db-vol-{uid}").remove(force=True)


@pytest.fixture
def pg(deployed, recorder):
    """The module's container with one good backup in this test's fresh backup directory."""
    first = recorder.services.backups.create(recorder.ctx(), BackupJob(deployed, "first"))
    return deployed, first


def _error(func, *args, **kwargs):
    with pytest.raises(AgentError) as err:
        func(*args, **kwargs)
    return err.value


def assert_intact(recorder, uid, first):
    entries = recorder.services.backups.list(uid)
    assert [e["backup_uid"] for e in entries] == ["first"]
    assert entries[0]["sha256"] == first["sha256"]
    directory = os.path.dirname(first["backup_path"])
    assert sorted(os.listdir(directory)) == sorted(
        [os.path.basename(first["backup_path"]), os.path.basename(first["manifest_path"])])


def test_dump_of_missing_database_fails(pg, recorder):
    uid, first = pg
    err = _error(recorder.services.backups.create, recorder.ctx(), BackupJob(uid, "nodb", database="nosuchdb"))
    assert err.code == "command_failed" and err.details["exit_code"] != 0
    assert "nosuchdb" in err.details["stderr_tail"]
    assert_intact(recorder, uid, first)


def test_stopped_container(pg, recorder, docker_client):
    uid, first = pg
    docker_client.containers.get(f"pulseup-db-{uid}").stop(timeout=30)
    err = _error(recorder.services.backups.create, recorder.ctx(), BackupJob(uid, "stopped"))
    assert err.code == "failed_precondition" and "not running" in err.message
    assert_intact(recorder, uid, first)
    again = recorder.services.database.deploy(recorder.ctx(), DeployRequest(uid, "postgresql", PASSWORD))
    assert again["already_exists"] is True


def test_full_disk(pg, recorder, docker_client, backup_dir):
    uid, first = pg
    # a 256 KiB tmpfs where the service's backups go: a bigger dump cannot fit
    tmpfs = os.path.join(backup_dir, uid, "full")
    os.makedirs(tmpfs)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", tmpfs], check=True)
    try:
        cfg = recorder.services.cfg.replace(pulseup_backup_dir=tmpfs)
        from agent.services import Services
        small = Services(cfg).backups
        psql(docker_client, uid, "DROP TABLE IF EXISTS big; CREATE TABLE big AS SELECT g, md5(g::text) || md5((g * 7)::text) AS v "
                                 "FROM generate_series(1, 100000) g")
        ok = small.create(recorder.ctx(), BackupJob(uid, "tiny", database="postgres"))
        err = _error(small.create, recorder.ctx(), BackupJob(uid, "full"))
        assert err.code == "failed_precondition" and "no space left" in err.message
        assert [e["backup_uid"] for e in small.list(uid)] == ["tiny"]
        assert sorted(os.listdir(os.path.join(tmpfs, uid))) == sorted(
            [os.path.basename(ok["backup_path"]), os.path.basename(ok["manifest_path"])])
        small.services.close()
    finally:
        subprocess.run(["umount", tmpfs], check=True)
        os.rmdir(tmpfs)
        psql(docker_client, uid, "DROP TABLE IF EXISTS big")
    assert_intact(recorder, uid, first)


def test_tampered_file_is_refused_before_anything_happens(pg, recorder, docker_client):
    uid, first = pg
    with open(first["backup_path"], "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    psql(docker_client, uid, "DELETE FROM t WHERE id = 0; INSERT INTO t VALUES (0, 'after')")
    err = _error(recorder.services.database.restore, recorder.ctx(), uid, backup_uid="first")
    assert err.code == "integrity_error"
    assert psql(docker_client, uid, "SELECT v FROM t WHERE id = 0").strip() == "after"
    assert len(recorder.services.backups.list(uid)) == 1  # no safety backup was made
    with open(first["backup_path"], "ab") as f:
        f.write(b"x")
    assert _error(recorder.services.database.restore, recorder.ctx(), uid, backup_uid="first").code == "integrity_error"


@pytest.mark.parametrize("path", ["/etc/passwd", "../other/backup.dump.zst", "link"])
def test_path_outside_the_backup_directory(pg, recorder, backup_dir, path):
    uid, first = pg
    os.symlink("/etc/hostname", os.path.join(backup_dir, uid, "link"))
    try:
        err = _error(recorder.services.database.restore, recorder.ctx(), uid, backup_path=path)
    finally:
        os.unlink(os.path.join(backup_dir, uid, "link"))
    assert err.code == "invalid_argument"
    assert err.message == f"backup_path is outside the backup directory of service {uid}"
    assert_intact(recorder, uid, first)


def test_legacy_file_is_listed_but_not_restored(pg, recorder, backup_dir):
    uid, first = pg
    legacy = os.path.join(backup_dir, uid, "backup_2023-01-01.sql")
    with open(legacy, "w") as f:
        f.write("-- old dump\n")
    os.utime(legacy, (1672531200, 1672531200))  # 2023-01-01: older than the manifest backup
    entries = recorder.services.backups.list(uid)
    assert [e["legacy"] for e in entries] == [False, True]
    err = _error(recorder.services.database.restore, recorder.ctx(), uid, backup_path=legacy)
    assert err.code == "failed_precondition" and "legacy" in err.message
