"""The operations table (agent/operations.py) against the registry: every
command registered with an OperationSpec has a row, every row names a registered operation
command, and each spec carries its row's kind, deadlines, id and lock key."""

import pytest

from agent.handlers import build_registry
from agent.operations import OPERATIONS

REGISTRY = build_registry()
OPERATION_COMMANDS = sorted(name for name in REGISTRY.names() if REGISTRY.get(name).operation is not None)

# What each spec produced before the table existed (docs/commands.md, "Operations"):
# command -> (request, operation id, lock key)
EXPECTED = {
    "service.app.deploy": ({"deployment_uid": "d1", "service_uid": "s1"}, "deploy:d1", "s1"),
    "service.app.install": ({"service_uid": "s1"}, "install:s1", "s1"),
    "service.deploy.rollback": ({"service_uid": "s1"}, "rollback:s1", "s1"),
    "service.start": ({"service_uid": "s1"}, "lifecycle:s1", "s1"),
    "service.stop": ({"service_uid": "s1"}, "lifecycle:s1", "s1"),
    "service.restart": ({"service_uid": "s1"}, "lifecycle:s1", "s1"),
    "service.delete": ({"service_uid": "s1"}, "delete:s1", "s1"),
    "service.domain.manage": ({"service_uid": "s1", "action": "upsert"}, "domain:s1", "s1"),
    "database.deploy": ({"service_uid": "s1"}, "database_deploy:s1", "s1"),
    "database.backup.create": ({"service_uid": "s1", "backup_uid": "b1"}, "backup:b1", "s1"),
    "database.backup.restore": ({"service_uid": "s1"}, "restore:s1", "s1"),
    "database.backup.download": ({"backup_uid": "b1"}, "upload:b1", None),
    "agent.update.apply": ({}, "update:agent", "agent"),
    "agent.command.execute": ({"command_id": "docker.list_all"}, "command:docker.list_all",
                              "command:docker.list_all"),
    "server.ssh_key.add": ({"user": "deploy"}, "ssh_key:deploy", "ssh_key:deploy"),
    "server.ssh_key.remove": ({"user": "deploy"}, "ssh_key:deploy", "ssh_key:deploy"),
}


def test_every_operation_command_has_a_row_and_no_row_is_stale():
    assert OPERATION_COMMANDS == sorted(OPERATIONS)


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_the_registered_spec_is_its_row(name):
    spec, row = REGISTRY.get(name).operation, OPERATIONS[name]
    request, operation_id, lock = EXPECTED[name]
    assert (spec.kind, spec.timeout_max) == (row.kind, row.maximum)
    assert spec.default_timeout(request) == row.default
    assert spec.operation_id(request) == operation_id
    assert (spec.lock_key(request) if spec.lock_key else None) == lock


def test_the_numbers_of_the_deadline_table():
    deadlines = {name: (row.default, row.maximum) for name, row in OPERATIONS.items()}
    assert deadlines["service.app.deploy"] == (1800, 7200)
    assert deadlines["service.delete"] == (300, 1800)
    assert deadlines["database.backup.create"] == (3600, 86400)
    assert deadlines["server.ssh_key.remove"] == (60, 300)
    assert REGISTRY.get("agent.command.execute").operation.default_timeout(
        {"command_id": "system.update_packages"}) == 1800
    assert REGISTRY.get("service.delete").operation.preempting
    domain = REGISTRY.get("service.domain.manage").operation
    assert domain.for_request({"service_uid": "s1", "action": "status"}) is None


def test_the_operations_the_agent_starts_itself():
    """A scheduled backup and a restart recovery take their specs from the same table."""
    from agent.operations import AGENT_OPERATIONS, spec
    from agent.services.backups import runner
    from agent.worker import recovery
    assert set(AGENT_OPERATIONS) == {runner.COMMAND, recovery.COMMAND}
    backup = spec(runner.COMMAND)
    assert (backup.kind, backup.timeout_max, backup.default_timeout({})) == ("backup", 86400, 3600)
    assert backup.operation_id({"backup_uid": "b1"}) == "backup:b1" and backup.lock_key({"service_uid": "s"}) == "s"
    record = {"operation_id": "deploy:d1", "service_uid": "s"}
    assert (recovery.SPEC.kind, recovery.SPEC.cancellable) == ("recovery", False)
    assert recovery.SPEC.operation_id(record) == "recovery:deploy:d1" and recovery.SPEC.lock_key(record) == "s"
