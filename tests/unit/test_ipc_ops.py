"""Every supervisor op the worker side sends is in the supervisor's allow-list.

The worker side (agent/worker, handlers, services, doctor) names ops by the constants of
agent/protocol/ipc.py; the supervisor's OPS table (agent/supervisor/ops.py) is keyed by the
same constants. Sources are read with ``ast``, so an op named in a function that no test runs
counts too. This test imports both sides; production code never does (tests/unit/test_imports.py).
"""

import ast
import pathlib

from agent.protocol import ipc
from agent.services import commands
from agent.supervisor.ops import OPS

ROOT = pathlib.Path(__file__).resolve().parents[2] / "agent"
WORKER_SIDE = ("worker", "handlers", "services", "doctor")
CONSTANTS = {name: value for name, value in vars(ipc).items() if name.startswith("OP_")}


def _named_ops(tree):
    """OP_* names used in ``tree`` and string literals passed to an ``....ipc....call(...)``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id.startswith("OP_"):
            yield node.id
        elif isinstance(node, ast.Attribute) and node.attr.startswith("OP_"):
            yield node.attr
        elif isinstance(node, ast.alias) and node.name.startswith("OP_"):
            yield node.name
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "call"
              and "ipc" in ast.unparse(node.func.value) and node.args
              and isinstance(node.args[0], ast.Constant)):
            yield repr(node.args[0].value)


def worker_side_ops():
    """{name or repr(literal): first file naming it} over the worker side's sources."""
    found = {}
    for package in WORKER_SIDE:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in _named_ops(ast.parse(path.read_text(), filename=str(path))):
                found.setdefault(name, str(path.relative_to(ROOT.parent)))
    return found


def test_the_constants_and_the_ops_table_are_the_same_set():
    assert sorted(CONSTANTS.values()) == sorted(OPS)
    assert len(set(CONSTANTS.values())) == len(CONSTANTS)


def test_every_op_the_worker_side_names_is_a_constant_in_ops():
    used = worker_side_ops()
    literals = {name: where for name, where in used.items() if not name.startswith("OP_")}
    assert literals == {}, "name IPC ops by their constant in agent/protocol/ipc.py"
    unknown = {name: where for name, where in used.items() if name not in CONSTANTS}
    assert unknown == {}
    assert all(CONSTANTS[name] in OPS for name in used)


def test_the_scan_sees_the_known_callers():
    used = worker_side_ops()
    assert used["OP_WORKER_STATUS"] == "agent/worker/main.py"
    assert used["OP_AGENT_UPDATE_INSTALL"] == "agent/services/update.py"
    assert used["OP_SUPERVISOR_STATUS"] == "agent/doctor/host.py"
    assert {"OP_SSH_KEYS_ADD", "OP_SSH_KEYS_REMOVE", "OP_AGENT_UNINSTALL", "OP_SERVICE_RESTART"} <= set(used)
    tree = ast.parse('services.ipc.call("x.y", {})\nrequire_ipc(s).call("a.b")\nlink.call("c.d")\n')
    assert sorted(_named_ops(tree)) == ["'a.b'", "'x.y'"]


def test_agent_command_execute_supervisor_entries_exist_in_ops():
    ops = {entry.id: entry.op for entry in commands.WHITELIST.values() if entry.kind == "supervisor"}
    assert ops and {op for op in ops.values() if op not in OPS} == set()


def test_the_update_helper_asks_for_an_existing_op():
    # The helper (agent/supervisor/update.py) imports only the standard library: a literal there.
    tree = ast.parse((ROOT / "supervisor" / "update.py").read_text())
    asked = [node.args[1].value for node in ast.walk(tree) if isinstance(node, ast.Call)
             and getattr(node.func, "id", "") == "ipc_call" and isinstance(node.args[1], ast.Constant)]
    assert asked and set(asked) <= set(OPS)
