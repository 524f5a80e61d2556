"""Restart recovery of interrupted operations that change what runs (docs/operations.md
"Restart recovery", issue 16 item 7).

At start-up :class:`Recovery` merges the previous process's ``operations.json`` into the
phase records of ``STATE_DIR/recovery/`` (agent/services/interrupted.py), so that a second
crash during recovery loses nothing. Once the services run, each record becomes an agent
operation of its service (serialised like a call: the next deploy of that service waits
behind it). It acts by the recorded phase, emits the terminal status events of the
operation and of its service, answers the interrupted call ``internal`` with a message that
names the version that serves or the safety backup that holds the previous data, and only
then removes the record. What to do per kind is the owning service's ``recover`` hook
(``DeployService.recover``, ``DatabaseService.recover``); before anything runs,
``BackupsService.recover`` removes the partial files of interrupted backups.
"""

import time

import gevent

from agent import log
from agent.errors import AgentError
from agent.operations import spec
from agent.protocol import envelope, events
from agent.services import interrupted
from agent.services.deploy.recovery import operation_events
from agent.services.interrupted import RESTARTED, Result
from agent.values import rfc3339

_log = log.get("recovery")
# the service whose ``recover`` hook acts on each kind of interrupted operation
OWNERS = {"deploy": "deploy", "rollback": "deploy", "install": "deploy",
          "restore": "database", "database_deploy": "database"}
KINDS = tuple(OWNERS)
ATTEMPTS, RETRY_WAIT = 4, 5.0       # Docker may still be starting with the host
COMMAND = "agent.restart_recovery"
SPEC = spec(COMMAND, cancellable=False)    # agent/operations.py, AGENT_OPERATIONS


class Recovery:
    """Start-up recovery: ``settle`` before the link runs, ``start`` once the services run."""

    def __init__(self, state_dir, operations, calls, outbox):
        self.state_dir = state_dir
        self.calls, self.outbox = calls, outbox
        self.operations = operations        # the previous process's operations.json
        self.pending = _merge(state_dir, interrupted.load_all(state_dir), operations)

    def handles(self, operation):
        """True when ``operation`` (a record of operations.json) is recovered here."""
        return any(r["operation_id"] == operation.get("operation_id") for r in self.pending)

    def owns_call(self, call_id):
        return any(r.get("call_id") == call_id for r in self.pending)

    def settle(self, services):
        """Answer the interrupted calls no recovery owns (``internal``, docs/protocol.md,
        "Delivery"), let the backups service remove the partial files of interrupted backups
        and restores, and queue the terminal event of every operation not recovered later."""
        error = AgentError("internal", RESTARTED)
        for call_id in self.calls.interrupted:
            if self.owns_call(call_id):
                self.calls.start(call_id)       # answered by its recovery, even after another crash
                continue
            self.answer(call_id, envelope.error_response(call_id, error))
        for record in self.operations:
            backup_failed = services.backups.recover(record, RESTARTED)   # partial files go
            if self.handles(record):
                continue
            event = deployment_failed(record) or backup_failed
            if event is not None:
                self.outbox.put(events.prepare(*event)[0])     # durable, checked (events.py)

    def answer(self, call_id, frame):
        self.calls.finish(call_id, frame)
        self.outbox.put(frame, key=call_id)

    def start(self, jobs):
        """Submit one recovery operation per record through the dispatcher's job port."""
        for record in self.pending:
            jobs.submit(COMMAND, record, self._run, SPEC)
        self.pending = []

    def _run(self, ctx, record):
        ctx.point_of_no_return()
        result = None
        for attempt in range(1, ATTEMPTS + 1):
            try:
                result = recover(ctx.services, record)
                break
            except AgentError as exc:
                _log.warning("recovery of %s, attempt %d: %s", record["operation_id"], attempt, exc.message)
                result = Result("failed", f"restart recovery could not act ({exc.message}): check the service",
                                {"recovery": "failed"}, operation_events(record, "failed", exc.message))
                if attempt < ATTEMPTS:
                    gevent.sleep(RETRY_WAIT)
        _log.info("recovered %s of %s: %s", record["operation_id"], record["service_uid"], result.message)
        report(ctx.emit, record, result)
        if record.get("call_id"):
            error = AgentError("internal", f"{RESTARTED}; {result.message}", **result.details)
            self.answer(record["call_id"], envelope.error_response(record["call_id"], error, record["operation_id"]))
        interrupted.remove(self.state_dir, record["operation_id"])
        return {}


def deployment_failed(record):
    """The terminal ``update_deployment_status`` of an interrupted deploy nothing recovers."""
    if not record.get("deployment_uid"):
        return None
    return "update_deployment_status", {
        "deployment_uid": record["deployment_uid"], "service_uid": record.get("service_uid"),
        "status": "failed", "error": RESTARTED, "code": "internal", "timestamp": int(time.time())}


def _merge(state_dir, records, operations):
    """Phase records plus a record for every recoverable operation of operations.json."""
    by_id = {r["operation_id"]: r for r in records}
    for operation in operations:
        if not _valid(operation):
            continue
        record = by_id.setdefault(operation["operation_id"], {
            "kind": operation["kind"], "operation_id": operation["operation_id"],
            "service_uid": operation["service_uid"], "phase": None})
        for key in ("call_id", "deployment_uid"):
            if isinstance(operation.get(key), str) and not record.get(key):
                record[key] = operation[key]
        interrupted.write(state_dir, record)    # durable before the old record is gone
    kept = [r for r in by_id.values() if r["kind"] in KINDS and _clean(r["service_uid"])]
    for record in by_id.values():
        if record not in kept:
            _log.warning("dropping a phase record this agent cannot recover: %s", record["operation_id"][:200])
            interrupted.remove(state_dir, record["operation_id"])
    return kept


def _valid(operation):
    return (isinstance(operation, dict) and operation.get("kind") in KINDS
            and isinstance(operation.get("operation_id"), str) and _clean(operation.get("service_uid")))


def _clean(value):
    return isinstance(value, str) and 0 < len(value) <= 200 and value.isprintable() and "/" not in value


def recover(services, record):
    """Act on one record through the recover hook of the service that owns its kind
    (OWNERS: deploys, rollbacks and installs; restores and database deploys); returns an
    interrupted.Result. Raises AgentError (Docker...)."""
    return getattr(services, OWNERS[record["kind"]]).recover(record)


def report(emit, record, result):
    """The operation's terminal events, then the service's status."""
    for event, data in result.events:
        emit(event, data)
    data = {"service_uid": record["service_uid"], "status": result.service_status,
            "timestamp": rfc3339(precision="s")}
    data["message" if result.service_status == "running" else "error"] = f"{RESTARTED}; {result.message}"
    emit("update_service_status", data)
