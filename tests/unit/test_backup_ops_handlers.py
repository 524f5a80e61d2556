"""The backup-operations commands through the real dispatcher (tests.unit.fakes.Harness),
and scheduled runs admitted as dispatcher operations with an injected backup function
(a synthetic backup + manifest; the Docker pipeline runs in tests/integration/backups)."""

import os
import time

import gevent
import pytest

from agent.errors import AgentError
from agent.protocol import envelope
from agent.services.backups import BackupsService
from agent.services.backups.schedule import Schedule
from agent.services.backups.pipeline import status_event
from tests.unit.fakes import Harness
from tests.unit.test_backup_ops_support import make_backup

DAY = 86400.0


class Env(Harness):
    def __init__(self, tmp_path, backup_func=None, **overrides):
        roots = (str(tmp_path / "backups"), str(tmp_path / "srv"))
        super().__init__(tmp_path, pulseup_backup_dir=roots[0], pulseup_backup_storage_roots=roots, **overrides)
        os.makedirs(roots[1], exist_ok=True)
        self.services.events.target = self.dispatcher.emit     # as the worker's services get it
        self.backups = BackupsService(self.services, backup_func=backup_func, catchup_delay=0.2)
        self.services.__dict__["backups"] = self.backups
        self.frames = []

    def drain(self):
        while (head := self.outbox.peek()) is not None:
            self.frames.append(envelope.decode(head[1]).raw)
            self.outbox.ack(head[0])
        return self.frames

    def reply(self, call_id, event, data, timeout=10):
        self.call(call_id, event, data)
        with gevent.Timeout(timeout):
            while True:
                for frame in self.drain():
                    if frame.get("type") == "response" and frame["call_id"] == call_id:
                        return frame["data"]
                gevent.sleep(0.01)

    def statuses(self, backup_uid=None):
        self.drain()
        return [(f["data"]["backup_uid"], f["data"]["status"], f["data"].get("error_code"))
                for f in self.frames if f.get("event") == "backup_status_update"
                and (backup_uid is None or f["data"]["backup_uid"] == backup_uid)]


def wait_for(predicate, timeout=10):
    with gevent.Timeout(timeout, AssertionError("condition not reached")):
        while not predicate():
            gevent.sleep(0.02)


# -- commands ----------------------------------------------------------------------------------

@pytest.mark.parametrize("data,field", [
    ({"service_uid": "svc", "enabled": True}, "cron_expression"),
    ({"service_uid": "svc", "enabled": True, "cron_expression": "61 * * * *"}, "cron_expression"),
    ({"service_uid": "svc", "enabled": True, "cron_expression": "@daily", "timezone": "Nowhere/City"}, "timezone"),
    ({"service_uid": "svc", "enabled": "yes", "cron_expression": "@daily"}, "enabled"),
    ({"service_uid": "svc", "retention_days": 3651}, "retention_days"),
    ({"service_uid": "svc", "retention_days": "7"}, "retention_days"),
    ({"service_uid": "../x"}, "service_uid"),
    ({"service_uid": "svc", "storage_path": "/etc/pulseup"}, "storage_path"),
])
def test_automation_update_refusals(tmp_path, data, field):
    env = Env(tmp_path)
    reply = env.reply("c1", "database.backup.automation.update", data)
    assert reply["success"] is False and reply["code"] == "invalid_argument"
    assert reply["data"]["field"] == field
    assert not os.path.exists(tmp_path / "state" / "backup-automation" / "svc.json")


def test_automation_update_refuses_a_file_as_storage_path(tmp_path):
    env = Env(tmp_path)
    (tmp_path / "srv" / "f").write_text("file")
    reply = env.reply("c1", "database.backup.automation.update", {
        "service_uid": "svc", "enabled": True, "cron_expression": "@daily", "storage_path": str(tmp_path / "srv" / "f")})
    assert reply["code"] == "invalid_argument" and "not a directory" in reply["error"]


def test_automation_update_and_get(tmp_path):
    env = Env(tmp_path)
    assert env.reply("g0", "database.backup.automation.get", {"service_uid": "svc"})["data"] == {"enabled": False}
    reply = env.reply("u1", "database.backup.automation.update", {
        "service_uid": "svc", "enabled": True, "cron_expression": "0 3 * * *", "timezone": "Asia/Tokyo",
        "storage_path": "copies", "retention_days": 14})
    assert reply["success"], reply
    data = reply["data"]
    assert data["status"] == "ok" and data["enabled"] and data["cron_expression"] == "0 3 * * *"
    assert data["timezone"] == "Asia/Tokyo" and data["storage_path"] == "copies" and data["retention_days"] == 14
    assert data["next_run_at"].endswith("T18:00:00.000Z")      # 03:00 in Tokyo is 18:00 UTC
    got = env.reply("g1", "database.backup.automation.get", {"service_uid": "svc"})["data"]
    assert got == {k: v for k, v in data.items() if k != "status"}
    assert os.stat(tmp_path / "state" / "backup-automation" / "svc.json").st_mode & 0o777 == 0o600
    disabled = env.reply("u2", "database.backup.automation.update", {"service_uid": "svc"})["data"]
    assert disabled["enabled"] is False and "next_run_at" not in disabled
    assert os.path.exists(tmp_path / "state" / "backup-automation" / "svc.json")   # kept, disabled


def test_storage_verify_reply_and_failure_shape(tmp_path):
    env = Env(tmp_path)
    target = str(tmp_path / "srv" / "x")
    ok = env.reply("v1", "database.backup.storage.verify", {"service_uid": "svc", "storage_path": target})
    assert ok["success"] and ok["data"]["status"] == "ok" and ok["data"]["normalized_path"] == target
    (tmp_path / "srv" / "f").write_text("file")
    for call_id, path in (("v2", str(tmp_path / "srv" / "f")), ("v3", str(tmp_path / "state"))):
        bad = env.reply(call_id, "database.backup.storage.verify", {"service_uid": "svc", "storage_path": path})
        assert bad["success"] is False and bad["code"] == "invalid_argument"
        assert bad["data"]["code"] == "invalid_argument" and bad["data"]["message"] == bad["error"]
        assert bad["data"]["normalized_path"] == path


def test_download_is_an_unserialised_operation(tmp_path):
    env = Env(tmp_path)
    command = env.dispatcher.registry.get("database.backup.download")
    spec = command.operation
    assert spec.kind == "upload" and spec.operation_id({"backup_uid": "b1"}) == "upload:b1"
    assert spec.lock_key is None and (spec.timeout_default, spec.timeout_max) == (3600, 86400)
    bad = env.reply("d1", "database.backup.download", {"service_uid": "svc", "backup_uid": "bad uid"})
    assert bad["code"] == "invalid_argument" and bad["data"]["field"] == "backup_uid"
    auto = "auto-svc-0b7c7a2e-5f7e-4d38-9a53-9a2c7e4f8d11"
    missing = env.reply("d2", "database.backup.download", {"service_uid": "svc", "backup_uid": auto})
    assert missing["code"] == "not_found"


# -- scheduled runs ------------------------------------------------------------------------------

class FakePipeline:
    """Stands in for DatabaseService.backup: the pipeline's events and a synthetic backup."""

    def __init__(self, cfg, delay=0.0, fail=None):
        self.cfg, self.delay, self.fail, self.jobs = cfg, delay, fail, []

    def __call__(self, ctx, job):
        self.jobs.append(job)
        status_event(ctx, job, "in_progress")
        gevent.sleep(self.delay)
        if self.fail:
            status_event(ctx, job, "failed", error_message=self.fail.message, error_code=self.fail.code)
            raise self.fail
        path = make_backup(os.path.join(self.cfg.pulseup_backup_dir, job.service_uid), job.service_uid,
                           created=time.time(), backup_uid=job.backup_uid)
        status_event(ctx, job, "completed", file_path=path)
        return {"backup_path": path, "backup_uid": job.backup_uid}


def schedule(uid="svc", **kwargs):
    return Schedule(uid, True, "@every 1h", **kwargs)


def test_a_run_is_a_dispatcher_operation_with_one_terminal_event(tmp_path):
    env = Env(tmp_path)
    pipeline = FakePipeline(env.cfg, delay=0.3)
    env.backups._backup = pipeline
    env.backups.start(env.services)
    env.backups._launch(schedule(), "auto-svc-00000000-0000-4000-8000-000000000001")
    wait_for(lambda: env.dispatcher.operations.listing())
    (operation,) = env.dispatcher.operations.listing()
    assert operation["operation_id"] == "backup:auto-svc-00000000-0000-4000-8000-000000000001"
    assert operation["kind"] == "backup" and operation["service_uid"] == "svc"
    wait_for(lambda: not env.dispatcher.operations.listing())
    assert pipeline.jobs[0].backup_type == "scheduled"
    assert [s for _, s, _ in env.statuses()] == ["in_progress", "completed"]


def test_a_run_while_a_backup_is_running_is_skipped_with_conflict(tmp_path):
    env = Env(tmp_path)
    env.backups._backup = FakePipeline(env.cfg, delay=1.0)
    env.backups.start(env.services)
    first, second = (f"auto-svc-00000000-0000-4000-8000-00000000000{i}" for i in (1, 2))
    env.backups._launch(schedule(), first)
    wait_for(lambda: env.backups.runner.busy("svc"))
    env.backups._launch(schedule(), second)
    assert env.statuses(second) == [(second, "failed", "conflict")]
    wait_for(lambda: (first, "completed", None) in env.statuses(first))


def test_a_run_waits_behind_another_operation_of_the_service(tmp_path):
    env = Env(tmp_path)
    pipeline = FakePipeline(env.cfg)
    env.backups._backup = pipeline
    env.backups.start(env.services)
    env.call("s1", "test.sleep", {"service_uid": "svc", "seconds": 0.5})
    wait_for(lambda: env.dispatcher.operations.listing())
    env.backups._launch(schedule(), "auto-svc-00000000-0000-4000-8000-000000000003")
    gevent.sleep(0.2)
    states = {o["kind"]: o["state"] for o in env.dispatcher.operations.listing()}
    assert states == {"test": "running", "backup": "queued"} and pipeline.jobs == []
    wait_for(lambda: pipeline.jobs and not env.dispatcher.operations.listing())


def test_a_run_cancelled_while_queued_reports_failed(tmp_path):
    env = Env(tmp_path)
    env.backups._backup = FakePipeline(env.cfg)
    env.backups.start(env.services)
    env.call("s1", "test.sleep", {"service_uid": "svc", "seconds": 1.0})
    wait_for(lambda: env.dispatcher.operations.listing())
    uid = "auto-svc-00000000-0000-4000-8000-000000000004"
    env.backups._launch(schedule(), uid)
    job = env.dispatcher.operations.find(backup_uid=uid)
    assert env.dispatcher.cancel(job=job) == "cancelling"
    assert env.statuses(uid) == [(uid, "failed", "cancelled")]


def test_copy_and_retention_then_completed(tmp_path):
    env = Env(tmp_path)
    env.backups._backup = FakePipeline(env.cfg)
    env.backups.start(env.services)
    home, copies = tmp_path / "backups" / "svc", tmp_path / "srv" / "copies"
    old = make_backup(str(home), "svc", created=1_000_000.0)
    old_copy = make_backup(str(copies), "svc", created=1_000_000.0)
    foreign = make_backup(str(home), "intruder", created=1_000_000.0)
    legacy = home / "backup_legacy.sql"
    legacy.write_text("-- old agent")
    uid = "auto-svc-00000000-0000-4000-8000-000000000005"
    env.backups._launch(schedule(storage_path=str(copies), retention_days=1), uid)
    wait_for(lambda: (uid, "completed", None) in env.statuses(uid))
    assert env.statuses(uid) == [(uid, "in_progress", None), (uid, "completed", None)]
    assert not os.path.exists(old) and not os.path.exists(old_copy)
    assert os.path.exists(foreign) and legacy.exists()
    copied = [n for n in os.listdir(copies) if not n.endswith(".json")]
    assert len(copied) == 1 and (home / copied[0]).exists()


def test_copy_failure_turns_the_run_failed(tmp_path):
    env = Env(tmp_path)
    env.backups._backup = FakePipeline(env.cfg)
    env.backups.start(env.services)
    blocker = tmp_path / "srv" / "blocked"
    blocker.write_text("a file where the storage directory should be")
    uid = "auto-svc-00000000-0000-4000-8000-000000000006"
    env.backups._launch(schedule(storage_path=str(blocker)), uid)
    wait_for(lambda: len(env.statuses(uid)) >= 2)
    assert env.statuses(uid) == [(uid, "in_progress", None), (uid, "failed", "invalid_argument")]


def test_pipeline_refusal_before_it_started_still_reports(tmp_path):
    env = Env(tmp_path)

    def missing(ctx, job):
        raise AgentError("not_found", f"database container of {job.service_uid} does not exist")

    env.backups._backup = missing
    env.backups.start(env.services)
    uid = "auto-svc-00000000-0000-4000-8000-000000000007"
    env.backups._launch(schedule(), uid)
    wait_for(lambda: len(env.statuses(uid)) >= 2)
    assert env.statuses(uid) == [(uid, "in_progress", None), (uid, "failed", "not_found")]


def test_retention_spares_a_backup_a_queued_restore_needs(tmp_path):
    env = Env(tmp_path)
    home = tmp_path / "backups" / "svc"
    target = make_backup(str(home), "svc", created=1_000_000.0, backup_uid="wanted")
    other = make_backup(str(home), "svc", created=1_000_001.0)
    make_backup(str(home), "svc", created=2_000_000_000.0)
    env.call("s1", "test.sleep", {"service_uid": "svc", "seconds": 1.0})
    env.call("r1", "database.backup.restore", {"service_uid": "svc", "backup_uid": "wanted"})
    wait_for(lambda: len(env.dispatcher.operations.listing()) == 2)
    env.backups._retention(schedule(retention_days=1))
    assert os.path.exists(target) and not os.path.exists(other)
    env.dispatcher.cancel(job=env.dispatcher.operations.find(call_id="r1"))
