"""Schedules: parsing, next-run evaluation, persistence, and the scheduler loop with a
recording launcher (the real backup pipeline is covered in tests/integration/backups)."""

import json
import os
import stat
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import gevent
import pytest

from agent.errors import AgentError
from agent.services.backups.schedule import Schedule, ScheduleStore, next_after, parse_every, validate
from agent.services.backups.scheduler import Scheduler, scheduled_uid

AUTO_UID = r"^auto-[A-Za-z0-9][A-Za-z0-9_.-]{0,63}-[0-9a-f-]{36}$"   # docs/commands.md, "Identifiers and values"


def epoch(*args, tz="UTC"):
    return datetime(*args, tzinfo=ZoneInfo(tz)).timestamp()


@pytest.mark.parametrize("expression", ["*/5 * * * *", "0 3 * * 1-5", "@daily", "@hourly", "@yearly",
                                        "@annually", "@monthly", "@weekly", "@midnight", "@every 20s",
                                        "@every 1h30m", ""])
def test_valid_expressions(expression):
    validate(expression, "UTC")


@pytest.mark.parametrize("expression", ["61 * * * *", "* * * *", "* * * * * *", "@reboot", "@every",
                                        "@every 20", "@every 0.5s", "@every soon", "every 5m", "a b c d e"])
def test_invalid_expressions(expression):
    with pytest.raises(AgentError) as info:
        validate(expression, "UTC")
    assert info.value.code == "invalid_argument" and info.value.field == "cron_expression"


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "../../etc/passwd", "UTC\x00"])
def test_invalid_time_zone(tz):
    with pytest.raises(AgentError) as info:
        validate("@daily", tz)
    assert info.value.field == "timezone"


def test_every_is_anchored_at_the_update():
    schedule = Schedule("svc", True, "@every 20s", anchor=1000.0)
    assert parse_every("@every 1m30s") == 90.0
    assert next_after(schedule, 1000.0) == 1020.0
    assert next_after(schedule, 1019.9) == 1020.0
    assert next_after(schedule, 1020.0) == 1040.0
    # missed runs follow the rule, they do not shift the grid (docs/commands.md, "Databases")
    assert next_after(schedule, 1234.5) == 1240.0


def test_cron_is_evaluated_in_the_time_zone():
    schedule = Schedule("svc", True, "0 3 * * *", timezone="America/New_York")
    after = epoch(2024, 6, 1, 12, 0)
    assert next_after(schedule, after) == epoch(2024, 6, 2, 3, 0, tz="America/New_York")
    utc = Schedule("svc", True, "0 3 * * *")
    assert next_after(utc, after) == epoch(2024, 6, 2, 3, 0)


def test_cron_across_a_dst_change():
    # Europe/Berlin springs forward on 2024-03-31 at 02:00 -> 03:00
    schedule = Schedule("svc", True, "30 4 * * *", timezone="Europe/Berlin")
    after = epoch(2024, 3, 30, 12, 0, tz="Europe/Berlin")
    first = next_after(schedule, after)
    second = next_after(schedule, first)
    assert first == epoch(2024, 3, 31, 4, 30, tz="Europe/Berlin")
    assert second - first == 24 * 3600    # wall clock 04:30 both days, DST keeps the local time
    assert datetime.fromtimestamp(first, timezone.utc).hour == 2


def test_disabled_or_empty_has_no_next_run():
    assert next_after(Schedule("svc", False, "@daily"), 0) is None
    assert next_after(Schedule("svc", True, ""), 0) is None


def test_store_round_trip_and_modes(tmp_path):
    store = ScheduleStore(str(tmp_path))
    schedule = Schedule("svc.a", True, "@every 20s", "Europe/Paris", "/srv/x", 7, anchor=5.0, next_run=25.0)
    store.save(schedule)
    path = store.path("svc.a")
    assert path == str(tmp_path / "backup-automation" / "svc.a.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert store.load_all() == [schedule]
    assert os.listdir(os.path.dirname(path)) == ["svc.a.json"]     # no temporary file left


def test_store_skips_broken_and_foreign_files(tmp_path):
    store = ScheduleStore(str(tmp_path))
    store.save(Schedule("good", True, "@daily"))
    directory = tmp_path / "backup-automation"
    (directory / "broken.json").write_text("{not json")
    (directory / "other.json").write_text(json.dumps({"service_uid": "someone-else"}))
    (directory / "badcron.json").write_text(json.dumps({"service_uid": "badcron", "cron_expression": "61 * * * *"}))
    (directory / ".good.json.partial-1").write_text("{}")
    assert [s.service_uid for s in store.load_all()] == ["good"]


def test_store_unwritable_is_failed_precondition(tmp_path):
    (tmp_path / "backup-automation").write_text("a file where the directory should be")
    with pytest.raises(AgentError) as info:
        ScheduleStore(str(tmp_path)).save(Schedule("svc"))
    assert info.value.code == "failed_precondition"


def test_scheduled_uid_form():
    import re
    uid = scheduled_uid("db-" + "x" * 61)
    assert re.match(AUTO_UID, uid) and len(uid) <= 106


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def test_load_turns_a_missed_run_into_one_catch_up(tmp_path):
    store = ScheduleStore(str(tmp_path))
    store.save(Schedule("late", True, "@every 20s", anchor=0.0, next_run=100.0))
    store.save(Schedule("early", True, "@every 20s", anchor=0.0, next_run=1020.0))
    store.save(Schedule("off", False, "@every 20s", anchor=0.0, next_run=100.0))
    scheduler = Scheduler(store, launch=None, catchup_delay=7.0, clock=Clock(1000.0))
    scheduler.load()
    assert scheduler.schedules["late"].next_run == 1007.0     # one catch-up, soon after start
    assert scheduler.schedules["early"].next_run == 1020.0    # nothing missed: unchanged
    assert scheduler.schedules["off"].next_run == 100.0 and not scheduler.schedules["off"].active


def test_update_persists_validates_and_keeps_history(tmp_path):
    clock = Clock(1000.0)
    scheduler = Scheduler(ScheduleStore(str(tmp_path)), launch=None, clock=clock)
    first = scheduler.update("svc", True, "@every 30s", "UTC", None, 3)
    assert first.next_run == 1030.0 and first.anchor == 1000.0
    scheduler.record("svc", None, "completed")              # not the last run: ignored
    scheduler.schedules["svc"].last_backup_uid = "auto-svc-x"
    scheduler.record("svc", "auto-svc-x", "completed")
    clock.now = 1010.0
    second = scheduler.update("svc", True, "@every 30s", "UTC", None, 3)
    assert second.next_run == 1040.0                       # re-anchored at the update
    assert second.last_status == "completed"
    with pytest.raises(AgentError):
        scheduler.update("svc", True, "@every 1", "UTC", None, 3)
    reloaded = Scheduler(ScheduleStore(str(tmp_path)), launch=None, clock=clock)
    assert reloaded.get("svc").next_run == 1040.0 and reloaded.get("svc").last_status == "completed"
    assert reloaded.delete("svc") and reloaded.get("svc") is None
    assert not os.path.exists(ScheduleStore(str(tmp_path)).path("svc"))


def run_scheduler(tmp_path, launched, catchup_delay=0.2):
    scheduler = Scheduler(ScheduleStore(str(tmp_path)), lambda s, uid: launched.append((s.service_uid, uid)),
                          catchup_delay=catchup_delay)
    return scheduler, gevent.spawn(scheduler.run)


def wait_for(predicate, timeout):
    with gevent.Timeout(timeout, AssertionError("condition not reached")):
        while not predicate():
            gevent.sleep(0.05)


def test_loop_fires_every_interval_and_survives_a_restart(tmp_path):
    launched = []
    scheduler, loop = run_scheduler(tmp_path, launched)
    try:
        scheduler.update("svc", True, "@every 1s", "UTC", None, 0)
        wait_for(lambda: len(launched) >= 2, 10)
    finally:
        loop.kill()
    assert {uid for _, uid in launched} and len({uid for _, uid in launched}) == len(launched)
    count = len(launched)
    # a new scheduler (the worker restarted) picks the schedule up from STATE_DIR alone
    scheduler, loop = run_scheduler(tmp_path, launched)
    try:
        wait_for(lambda: len(launched) >= count + 2, 10)
    finally:
        loop.kill()
    assert all(service == "svc" for service, _ in launched)


def test_downtime_gives_exactly_one_catch_up(tmp_path):
    launched = []
    scheduler, loop = run_scheduler(tmp_path, launched)
    scheduler.update("svc", True, "@every 1s", "UTC", None, 0)
    wait_for(lambda: len(launched) >= 1, 10)
    loop.kill()
    anchor = scheduler.schedules["svc"].anchor
    gevent.sleep(3.5)                 # the agent is "down" for three runs or more
    launched.clear()
    scheduler, loop = run_scheduler(tmp_path, launched, catchup_delay=0.5)
    try:
        gevent.sleep(0.3)
        assert launched == []         # the catch-up waits for catchup_delay
        wait_for(lambda: len(launched) >= 1, 5)
        caught_up_at = scheduler.schedules["svc"].last_run
        gevent.sleep(0.3)
        assert len(launched) == 1     # one catch-up, not one per missed slot
        wait_for(lambda: len(launched) >= 2, 5)
    finally:
        loop.kill()
    # after the catch-up the rule's grid (anchored at the update) applies again
    regular = scheduler.schedules["svc"].last_run
    assert regular > caught_up_at
    assert (regular - anchor) % 1.0 < 0.3


def test_a_launch_failure_does_not_stop_the_loop(tmp_path):
    calls = []

    def launch(schedule, uid):
        calls.append(uid)
        raise RuntimeError("boom")

    scheduler = Scheduler(ScheduleStore(str(tmp_path)), launch)
    loop = gevent.spawn(scheduler.run)
    try:
        scheduler.update("svc", True, "@every 1s", "UTC", None, 0)
        wait_for(lambda: len(calls) >= 2, 10)
    finally:
        loop.kill()
    assert scheduler.get("svc").last_status in ("failed", "in_progress")
