"""Phase records of operations that change what runs (issue 16 item 7, docs/operations.md
"Restart recovery").

A deploy, a rollback or a database restore writes one small JSON file under
``STATE_DIR/recovery/`` at every phase boundary (atomically: temporary file, fsync, rename,
fsync of the directory) and removes it when it ends by itself. A file still there when a
worker starts is an operation a crash interrupted; restart recovery reads its phase and
decides what to do (agent/services/deploy/recovery.py, agent/worker/recovery.py).

``PULSEUP_FAULT_KILL_AT=<kind>:<phase>`` is a fault-injection hook for the crash tests
(tests/resilience/test_faults_phases.py): the process SIGKILLs itself right after the record
of that phase is durable, so each phase boundary is tested without a sleep.
"""

import dataclasses
import hashlib
import json
import os
import signal

from agent import log
from agent.fsutil import atomic_write

_log = log.get("recovery")
DIRECTORY = "recovery"
FAULT_ENV = "PULSEUP_FAULT_KILL_AT"
MAX_RECORD_BYTES = 256 * 1024
RESTARTED = "agent restarted during operation"


@dataclasses.dataclass
class Result:
    """What a service's ``recover`` hook found and did for one interrupted operation."""
    service_status: str              # update_service_status: running / failed
    message: str                     # what was done and what serves (or holds the data)
    details: dict = dataclasses.field(default_factory=dict)
    events: list = dataclasses.field(default_factory=list)   # [(event, data)] of the operation


def _directory(state_dir):
    return os.path.join(state_dir, DIRECTORY)


def _path(state_dir, operation_id):
    digest = hashlib.sha256(operation_id.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return os.path.join(_directory(state_dir), f"{digest}.json")


def write(state_dir, record):
    """Store ``record`` (a dict with ``operation_id``) durably; a failure is logged only:
    the operation itself goes on (its recovery then falls back to what Docker shows)."""
    try:
        os.makedirs(_directory(state_dir), mode=0o700, exist_ok=True)
        atomic_write(_path(state_dir, record["operation_id"]), json.dumps(record).encode(), mode=0o600)
    except (OSError, ValueError, TypeError) as exc:
        _log.warning("cannot record phase %s of %s: %s", record.get("phase"), record.get("operation_id"), exc)


def remove(state_dir, operation_id):
    try:
        os.unlink(_path(state_dir, operation_id))
    except FileNotFoundError:
        pass
    except OSError as exc:
        _log.warning("cannot remove the phase record of %s: %s", operation_id, exc.strerror)


def load_all(state_dir):
    """Every readable record, oldest first; unreadable or foreign files are logged and removed."""
    directory = _directory(state_dir)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    records = []
    for name in names:
        path = os.path.join(directory, name)
        if not name.endswith(".json") or name.startswith("."):
            _unlink(path)
            continue
        record = _read(path)
        if record is None or _path(state_dir, record["operation_id"]) != path:
            _log.warning("dropping unreadable phase record %s", name)
            _unlink(path)
            continue
        records.append((os.path.getmtime(path), record))
    return [record for _, record in sorted(records, key=lambda item: item[0])]


def _read(path):
    try:
        if os.path.getsize(path) > MAX_RECORD_BYTES:
            return None
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("operation_id"), str) \
            or not isinstance(record.get("kind"), str) or not isinstance(record.get("service_uid"), str):
        return None
    return record


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


class PhaseLog:
    """The phase record of one running operation. ``phase(name, **fields)`` merges the
    fields and writes; ``close()`` removes the record (the operation ended by itself)."""

    def __init__(self, state_dir, kind, operation_id, service_uid, call_id=None, **fields):
        self.state_dir = state_dir
        self.record = {"kind": kind, "operation_id": operation_id, "service_uid": service_uid,
                       "call_id": call_id, "phase": None, **fields}

    @classmethod
    def for_call(cls, ctx, kind, operation_id, service_uid, **fields):
        """A PhaseLog for the call of ``ctx``; None without a state directory (tools)."""
        state_dir = getattr(ctx.cfg, "state_dir", None) if ctx is not None else None
        if not state_dir:
            return None
        job = getattr(ctx, "operation", None)
        operation_id = getattr(job, "operation_id", None) or operation_id
        return cls(state_dir, kind, operation_id, service_uid, getattr(ctx, "call_id", None), **fields)

    def update(self, **fields):
        self.record.update(fields)
        write(self.state_dir, self.record)

    def phase(self, name, **fields):
        self.record["phase"] = name
        self.update(**fields)
        _fault_point(self.record["kind"], name)

    def close(self):
        remove(self.state_dir, self.record["operation_id"])


def _fault_point(kind, phase):
    """The crash tests' hook (module docstring): die here, as a SIGKILL would."""
    wanted = os.environ.get(FAULT_ENV)
    if wanted and wanted == f"{kind}:{phase}":
        os.kill(os.getpid(), signal.SIGKILL)
