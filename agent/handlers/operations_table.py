"""The operations table: every long-running command in one place (docs/commands.md, "Operations").

One row per command: the operation kind (the id is ``<kind>:<request[id_field]>``, or the
fixed ``id_field`` text when it is no request field), the default and maximum deadline in
seconds, and what it is serialised per (its lock key). Commands not listed here are plain
commands with the fixed 30 s deadline. The handler modules take their
:class:`~agent.handlers.registry.OperationSpec` from :func:`spec`; a unit test checks this table
against the registry (tests/unit/test_operations_table.py).
"""

from typing import NamedTuple, Optional

from agent.handlers.registry import OperationSpec, by_service


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
REQUEST_FIELDS = frozenset({"deployment_uid", "service_uid", "backup_uid", "command_id", "user"})


def spec(command, **extra):
    """The OperationSpec of ``command`` from its row; ``extra`` sets the other fields
    (``preempting``, ``applies``, ``queued_event``, a per-request ``timeout_default``)."""
    row = OPERATIONS[command]
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
