"""Backup schedules: parsing, next-run evaluation and persistence (docs/commands.md, "Databases").

Cron expressions are evaluated by croniter in the schedule's IANA time zone (zoneinfo),
with 5 fields or one of the ``@`` aliases; ``@every <duration>`` is parsed here and
anchored at the schedule's creation or last update (docs/commands.md, "Databases"): its runs fall on
``anchor + k * interval``. A schedule lives in ``STATE_DIR/backup-automation/<uid>.json``
(0600, written atomically), together with the time of the next run, so that a restart can
tell a missed run (one catch-up) from an upcoming one.
"""

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent import log
from agent.errors import AgentError, invalid
from agent.protocol.fields import UID_RE
from agent.services.backups import manifest as mf
from agent.values import parse_duration

ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
MIN_EVERY = 1.0                 # seconds; a shorter interval would only spin the loop
_BARE_NUMBER = re.compile(r"^\d+(\.\d+)?\Z")
_log = log.get("backups.schedule")


@dataclass
class Schedule:
    service_uid: str
    enabled: bool = False
    cron_expression: str = ""
    timezone: str = "UTC"
    storage_path: Optional[str] = None
    retention_days: int = 0
    anchor: float = field(default_factory=time.time)   # creation / last update (docs/commands.md, "Databases")
    next_run: Optional[float] = None                   # Unix s of the next due run
    last_run: Optional[float] = None
    last_status: Optional[str] = None
    last_backup_uid: Optional[str] = None
    last_error: Optional[str] = None

    @property
    def active(self):
        return self.enabled and bool(self.cron_expression)

    def public(self):
        """The reply of ``database.backup.automation.get``."""
        data = {"enabled": self.enabled, "cron_expression": self.cron_expression,
                "timezone": self.timezone, "storage_path": self.storage_path,
                "retention_days": self.retention_days}
        if self.active and self.next_run is not None:
            data["next_run_at"] = mf.rfc3339(self.next_run)
        if self.last_run is not None:
            data["last_run_at"] = mf.rfc3339(self.last_run)
        if self.last_status:
            data["last_status"] = self.last_status
        return data


def parse_every(expression):
    """Seconds of an ``@every <duration>`` expression; ValueError otherwise."""
    word = expression[len("@every"):].strip()
    if not word or _BARE_NUMBER.match(word):
        raise ValueError("@every needs a duration with units, like @every 90s or @every 1h30m")
    seconds = parse_duration(word)
    if seconds < MIN_EVERY:
        raise ValueError(f"@every needs at least {MIN_EVERY:g}s")
    return seconds


def validate(cron_expression, tz_name):
    """Check an expression and a time zone; raises AgentError(invalid_argument)."""
    zone(tz_name)
    expression = (cron_expression or "").strip()
    if not expression:
        return
    if expression.startswith("@every"):
        try:
            parse_every(expression)
        except ValueError as exc:
            raise invalid("cron_expression", str(exc)) from None
        return
    if expression.startswith("@"):
        if expression not in ALIASES:
            raise invalid("cron_expression", f"unknown alias; one of {', '.join(ALIASES)}, @every <duration>")
        return
    from croniter import croniter    # at use: croniter and dateutil are ~1.4 MB of an idle worker (issue 19)
    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise invalid("cron_expression", "5 fields (minute hour day-of-month month day-of-week) "
                                         "or an @ alias")


def zone(tz_name):
    """The ZoneInfo of an IANA name; raises AgentError(invalid_argument)."""
    try:
        return ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise invalid("timezone", f"unknown IANA time zone {tz_name!r}") from None


def next_after(schedule, after):
    """Unix s of the first run strictly after ``after``, None for an inactive schedule."""
    if not schedule.active:
        return None
    expression = schedule.cron_expression.strip()
    if expression.startswith("@every"):
        interval = parse_every(expression)
        steps = max(0, int((after - schedule.anchor) // interval) + 1)
        return schedule.anchor + steps * interval
    from croniter import croniter
    from croniter.croniter import CroniterError
    start = datetime.fromtimestamp(after, timezone.utc).astimezone(zone(schedule.timezone))
    try:
        return croniter(expression, start).get_next(float)
    except CroniterError as exc:     # validated on update; a hand-edited file may differ
        _log.warning("schedule of %s: %s", schedule.service_uid, exc)
        return None


class ScheduleStore:
    """``STATE_DIR/backup-automation/<uid>.json``; one file per service."""

    def __init__(self, state_dir):
        self.directory = os.path.join(state_dir, "backup-automation")

    def path(self, service_uid):
        return os.path.join(self.directory, f"{service_uid}.json")

    def save(self, schedule):
        """Atomic 0600 write. Raises AgentError(failed_precondition) when STATE_DIR is
        unwritable (docs/design.md, "Settings and files")."""
        try:
            mf.ensure_dir(self.directory)
            mf.write_json_atomic(self.path(schedule.service_uid), asdict(schedule))
        except OSError as exc:
            raise AgentError("failed_precondition",
                             f"cannot persist the schedule in {self.directory}: {exc.strerror or exc}") from exc

    def delete(self, service_uid):
        try:
            os.unlink(self.path(service_uid))
        except FileNotFoundError:
            return False
        return True

    def load_all(self):
        """Every readable schedule; broken files are logged and skipped."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            uid = name[:-len(".json")]
            if name.startswith(".") or not name.endswith(".json") or not UID_RE.match(uid):
                continue
            schedule = self._load(uid)
            if schedule is not None:
                found.append(schedule)
        return found

    def _load(self, service_uid):
        try:
            with open(self.path(service_uid), "rb") as handle:
                raw = json.loads(handle.read(1 << 20))
            schedule = Schedule(**{k: v for k, v in raw.items() if k in Schedule.__dataclass_fields__})
            if schedule.service_uid != service_uid:
                raise ValueError("service_uid differs from the file name")
            validate(schedule.cron_expression, schedule.timezone)
            return schedule
        except (OSError, ValueError, TypeError, AgentError) as exc:
            _log.warning("ignoring schedule file of %s: %s", service_uid, exc)
            return None

    def load(self, service_uid):
        return self._load(service_uid) if os.path.exists(self.path(service_uid)) else None
