"""The operations table: every long-running command in one place (docs/commands.md, "Operations").

One row per command: the operation kind (the id is ``<kind>:<request[id_field]>``, or the
fixed ``id_field`` text when it is no request field), the default and maximum deadline in
seconds, and what it is serialised per (its lock key). Commands not listed here are plain
commands with the fixed 30 s deadline. The handler modules take their :class:`OperationSpec`
from :func:`spec`, and so do the operations the agent starts itself (a scheduled backup, a
restart recovery), which is why the table sits in the base layer beside the settings table
(agent/config.py) rather than with the handlers. A unit test checks it against the registry
(tests/unit/test_operations_table.py).
"""

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional


@dataclass(frozen=True)
class OperationSpec:
    kind: str                                  # "deploy", "backup", ...
    operation_id: Callable[[dict], str]        # request -> "deploy:<uid>"
    timeout_default: object                    # seconds, or request -> seconds
    timeout_max: float
    lock_key: Optional[Callable[[dict], str]] = None  # request -> FIFO key, e.g. service uid
    cancellable: bool = True
    preempting: bool = False                   # service.delete cancels queued/running ops of its key
    applies: Optional[Callable[[dict], bool]] = None  # request -> False: run as a plain read-only command
    queued_event: Optional[Callable[[dict], tuple]] = None  # request -> (event, data) while it waits

    def default_timeout(self, request):
        value = self.timeout_default
        return float(value(request) if callable(value) else value)

    def for_request(self, request):
        """This spec, or None when the request is a read-only form (e.g. domain `status`)."""
        return self if self.applies is None or self.applies(request) else None


def by_service(request):
    """The usual serialisation key: the request's service_uid."""
    return request["service_uid"]


class Row(NamedTuple):
    kind: str
    id_field: str              # request field of the id, or the fixed id text ("agent")
    default: float             # seconds
    maximum: float             # seconds
    lock: Optional[str]        # "service": per service_uid; "id": per operation id; "agent"; None


OPERATIONS = {
    "service.app.deploy": Row("deploy", "deployment_uid", 1800, 7200, "service"),
    "service.app.install": Row("install", "service_uid", 900, 3600, "service"),
    "service.deploy.rollback": Row("rollback", "service_uid", 600, 3600, "service"),
    "service.start": Row("lifecycle", "service_uid", 120, 600, "service"),
    "service.stop": Row("lifecycle", "service_uid", 120, 600, "service"),
    "service.restart": Row("lifecycle", "service_uid", 120, 600, "service"),
    "service.delete": Row("delete", "service_uid", 300, 1800, "service"),
    "service.domain.manage": Row("domain", "service_uid", 120, 600, "service"),
    "database.deploy": Row("database_deploy", "service_uid", 600, 3600, "service"),
    "database.backup.create": Row("backup", "backup_uid", 3600, 86400, "service"),
    "database.backup.restore": Row("restore", "service_uid", 3600, 86400, "service"),
    "database.backup.download": Row("upload", "backup_uid", 3600, 86400, None),
    "agent.update.apply": Row("update", "agent", 900, 3600, "agent"),
    "agent.command.execute": Row("command", "command_id", 300, 3600, "id"),
    "server.ssh_key.add": Row("ssh_key", "user", 60, 300, "id"),
    "server.ssh_key.remove": Row("ssh_key", "user", 60, 300, "id"),
}
# Operations the agent starts itself (through the dispatcher's job port), listed like calls.
AGENT_OPERATIONS = {
    "database.backup.scheduled": Row("backup", "backup_uid", 3600, 86400, "service"),
    "agent.restart_recovery": Row("recovery", "operation_id", 3600, 3600, "service"),
}
REQUEST_FIELDS = frozenset({"deployment_uid", "service_uid", "backup_uid", "command_id", "user", "operation_id"})


def spec(command, **extra):
    """The OperationSpec of ``command`` from its row; ``extra`` sets the other fields
    (``preempting``, ``applies``, ``queued_event``, a per-request ``timeout_default``)."""
    row = OPERATIONS.get(command) or AGENT_OPERATIONS[command]
    operation_id = _operation_id(row)
    fields = {"timeout_default": row.default, **extra}
    return OperationSpec(row.kind, operation_id, timeout_max=row.maximum,
                         lock_key=_lock_key(row, operation_id), **fields)


def _operation_id(row):
    if row.id_field not in REQUEST_FIELDS:
        fixed = f"{row.kind}:{row.id_field}"
        return lambda request: fixed
    return lambda request: f"{row.kind}:{request[row.id_field]}"


def _lock_key(row, operation_id):
    if row.lock == "service":
        return by_service
    if row.lock == "id":
        return operation_id
    if row.lock is not None:
        return lambda request: row.lock
    return None
