"""Scheduled backups of a real Redis (the database engineer's stand-in image and pipeline),
admitted through the real dispatcher: `@every 2s` fires, copies to storage_path, applies
retention (a foreign and a legacy file survive), survives a restart of the scheduler and
catches up exactly once after downtime."""
import json
import os
import re
import time
import uuid

import gevent
import pytest

from agent.services.context import CallContext
from agent.services.backups import manifest as mf
from agent.services.database.provision import DeployRequest
from tests.unit.test_backup_ops_handlers import Env
from tests.unit.test_backup_ops_support import make_backup

AUTO_UID = re.compile(r"^auto-[A-Za-z0-9][A-Za-z0-9_.-]{0,63}-[0-9a-f-]{36}$")   # docs/commands.md, "Identifiers and values"
INTERVAL = 2.0
PASSWORD = "s3cret-Pw_42"


@pytest.fixture
def redis_uid(docker_client):
    uid = f"sched-{uuid.uuid4().hex[:8]}"
    yield uid
    for container in docker_client.containers.list(all=True, filters={"name": f"pulseup-db-{uid}"}):
        if container.name == f"pulseup-db-{uid}":
            container.remove(force=True, v=True)
    for volume in docker_client.volumes.list(filters={"name": f"pulseup-db-vol-{uid}"}):
        if volume.name == f"pulseup-db-vol-{uid}":
            volume.remove(force=True)


def make_env(tmp_path, docker_host, redis_image, catchup_delay=0.3):
    env = Env(tmp_path, docker_host=docker_host, db_image_redis=redis_image, db_image_pull="never")
    env.backups.scheduler.catchup_delay = catchup_delay
    env.launches = []
    launch = env.backups._launch

    def recording(schedule, backup_uid):
        env.launches.append((time.time(), backup_uid))
        launch(schedule, backup_uid)

    env.backups.scheduler.launch = recording
    return env


def completed(env):
    return [uid for uid, status, _ in env.statuses() if status == "completed"]


def wait_for(predicate, timeout):
    with gevent.Timeout(timeout, AssertionError("condition not reached in time")):
        while not predicate():
            gevent.sleep(0.05)


def stop(env):
    env.backups.close()
    env.services.close(timeout=2)
    env.outbox.close()
    env.calls.close()


def test_schedule_fires_copies_retains_restarts_and_catches_up(
        tmp_path, docker_host, test_network, redis_image, redis_uid):
    env = make_env(tmp_path, docker_host, redis_image)
    ctx = CallContext(env.services, "test", emit=lambda *a: None)
    env.services.database.deploy(ctx, DeployRequest(redis_uid, "redis", PASSWORD))
    home = tmp_path / "backups" / redis_uid
    copies = tmp_path / "srv" / "copies"
    old = make_backup(str(home), redis_uid, created=time.time() - 30 * 86400, fmt="redis_rdb")
    foreign = make_backup(str(home), "someone-else", created=time.time() - 30 * 86400, fmt="redis_rdb")
    legacy = home / "dump_2019.rdb"
    legacy.write_bytes(b"REDIS0009 legacy")

    env.backups.start(env.services)
    reply = env.reply("u1", "database.backup.automation.update", {
        "service_uid": redis_uid, "enabled": True, "cron_expression": f"@every {INTERVAL:g}s",
        "storage_path": str(copies), "retention_days": 1})
    assert reply["success"], reply
    anchor = env.backups.scheduler.get(redis_uid).anchor
    try:
        wait_for(lambda: len(completed(env)) >= 2, 30)
    finally:
        stop(env)
    runs = completed(env)
    for uid in runs:
        assert AUTO_UID.match(uid)
        assert [s for _, s, _ in env.statuses(uid)] == ["in_progress", "completed"]
    # launches fall on the grid anchored at the update (docs/commands.md, "Databases")
    assert all((at - anchor) % INTERVAL < 0.5 for at, _ in env.launches)
    entries = {e.get("backup_uid"): e for e in mf.list_entries(str(home), redis_uid)}
    for uid in runs:
        assert entries[uid]["backup_type"] == "scheduled" and entries[uid]["engine"] == "redis"
        copy = [e for e in mf.list_entries(str(copies), redis_uid) if e["backup_uid"] == uid]
        assert len(copy) == 1 and copy[0]["sha256"] == entries[uid]["sha256"]
    assert not os.path.exists(old) and not os.path.exists(old + ".json")     # retention
    assert os.path.exists(foreign) and legacy.exists()
    persisted = json.load(open(tmp_path / "state" / "backup-automation" / f"{redis_uid}.json"))
    assert persisted["last_status"] == "completed" and persisted["cron_expression"] == "@every 2s"

    # the worker is down for more than two runs, then starts again from STATE_DIR alone
    gevent.sleep(2.5 * INTERVAL)
    env = make_env(tmp_path, docker_host, redis_image, catchup_delay=0.3)
    started = time.time()
    env.backups.start(env.services)
    try:
        wait_for(lambda: len(env.launches) >= 2 and len(completed(env)) >= 1, 30)
    finally:
        stop(env)
    (catch_up_at, catch_up_uid), (regular_at, _) = env.launches[:2]
    assert 0.2 <= catch_up_at - started < 2.0          # one catch-up, soon after start-up
    assert (regular_at - anchor) % INTERVAL < 0.5      # then the rule's grid again
    assert catch_up_uid in completed(env)
    assert catch_up_uid in {e.get("backup_uid") for e in mf.list_entries(str(home), redis_uid)}
