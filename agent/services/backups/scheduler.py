"""The backup scheduler loop (docs/commands.md, "Databases").

One long-lived greenlet (spawned through ``services.spawn``) sleeps until the earliest due
schedule or until a schedule changes, then hands each due run to ``launch``. A run that was
due while the agent was down is caught up exactly once, ``catchup_delay`` after start-up
(at most 5 minutes, docs/commands.md, "Databases"); later runs follow the schedule's rule again
(docs/commands.md, "Databases"), so missed slots in between never pile up.
"""

import copy
import time
import uuid

import gevent.event

from agent import log
from agent.errors import AgentError
from agent.services.backups.schedule import Schedule, next_after, validate

MAX_SLEEP = 60.0        # re-evaluate at least this often (wall-clock jumps, DST)
CATCHUP_DELAY = 30.0    # after start-up: let the connection and Docker settle first
_log = log.get("backups.scheduler")


def scheduled_uid(service_uid):
    """docs/commands.md, "Identifiers and values": ``auto-<service_uid>-<uuid4>``."""
    return f"auto-{service_uid}-{uuid.uuid4()}"


class Scheduler:
    """Schedules in memory, persisted through ``store``; ``launch(schedule, backup_uid)``
    starts a run without blocking."""

    def __init__(self, store, launch, catchup_delay=CATCHUP_DELAY, clock=time.time):
        self.store = store
        self.launch = launch
        self.catchup_delay = catchup_delay
        self.clock = clock
        self.schedules = {}
        self.loaded = False
        self._wake = gevent.event.Event()

    # -- state -----------------------------------------------------------
    def load(self):
        """Read every persisted schedule; a run missed while the agent was down becomes
        one catch-up run ``catchup_delay`` from now."""
        now = self.clock()
        for schedule in self.store.load_all():
            if schedule.active:
                if schedule.next_run is not None and schedule.next_run <= now:
                    _log.info("backup schedule of %s missed a run at %s; catching up once",
                              schedule.service_uid, schedule.next_run)
                    schedule.next_run = now + self.catchup_delay
                elif schedule.next_run is None:
                    schedule.next_run = next_after(schedule, now)
            self.schedules[schedule.service_uid] = schedule
        self.loaded = True
        self._wake.set()

    def _ensure_loaded(self):
        if not self.loaded:
            self.load()

    def get(self, service_uid):
        """A copy of the schedule of ``service_uid``, or None."""
        self._ensure_loaded()
        schedule = self.schedules.get(service_uid)
        return copy.copy(schedule) if schedule is not None else None

    def update(self, service_uid, enabled, cron_expression, tz_name, storage_path, retention_days):
        """Replace the schedule (anchored now, docs/commands.md, "Databases") and persist it; returns a copy.

        Raises AgentError: invalid_argument (cron, time zone), failed_precondition
        (STATE_DIR unwritable).
        """
        validate(cron_expression, tz_name)
        self._ensure_loaded()
        now = self.clock()
        previous = self.schedules.get(service_uid)
        schedule = Schedule(service_uid, enabled, (cron_expression or "").strip(), tz_name, storage_path,
                            retention_days, anchor=now)
        if previous is not None:
            schedule.last_run, schedule.last_status = previous.last_run, previous.last_status
            schedule.last_backup_uid, schedule.last_error = previous.last_backup_uid, previous.last_error
        schedule.next_run = next_after(schedule, now)
        self.store.save(schedule)
        self.schedules[service_uid] = schedule
        self._wake.set()
        return copy.copy(schedule)

    def delete(self, service_uid):
        """Forget the schedule and its file (service.delete); True when there was one."""
        self._ensure_loaded()
        self.schedules.pop(service_uid, None)
        self._wake.set()
        return self.store.delete(service_uid)

    def record(self, service_uid, backup_uid, status, error=None):
        """The outcome of run ``backup_uid``; ignored when the schedule moved on."""
        schedule = self.schedules.get(service_uid)
        if schedule is None or schedule.last_backup_uid != backup_uid:
            return
        schedule.last_status, schedule.last_error = status, error
        self._persist(schedule)

    def _persist(self, schedule):
        try:
            self.store.save(schedule)
        except AgentError as exc:
            _log.warning("%s", exc.message)

    # -- loop --------------------------------------------------------------
    def run(self):
        """Fire due schedules forever (the caller owns the greenlet)."""
        self._ensure_loaded()
        while True:
            self._wake.clear()
            now = self.clock()
            for schedule in list(self.schedules.values()):
                if schedule.active and schedule.next_run is not None and schedule.next_run <= now:
                    self._fire(schedule, now)
            self._wake.wait(timeout=self._sleep_time(self.clock()))

    def _sleep_time(self, now):
        upcoming = [s.next_run for s in self.schedules.values() if s.active and s.next_run is not None]
        return max(0.0, min([MAX_SLEEP] + [t - now for t in upcoming]))

    def _fire(self, schedule, now):
        backup_uid = scheduled_uid(schedule.service_uid)
        schedule.next_run = next_after(schedule, now)
        schedule.last_run, schedule.last_backup_uid = now, backup_uid
        schedule.last_status, schedule.last_error = "in_progress", None
        self._persist(schedule)
        try:
            self.launch(copy.copy(schedule), backup_uid)
        except Exception:   # one broken run must not stop every schedule
            _log.exception("cannot start the scheduled backup of %s", schedule.service_uid)
            self.record(schedule.service_uid, backup_uid, "failed", "internal error starting the run")
