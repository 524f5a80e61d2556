"""The privilege boundary in the import graph (supervisor and worker never import each other:
docs/design.md, "Which may import which").

Imports are read with ``ast`` (module level and inside functions), so a lazy
import counts as much as a top-level one.
"""

import ast
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2] / "agent"
UNPRIVILEGED = ("worker", "handlers", "services")


def imported_modules(path):
    """Absolute names of every module imported by the file at path."""
    package = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}".rstrip(".")
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            yield str(node.args[0].value)


def files(package):
    return sorted((ROOT / package).rglob("*.py"))


def offenders(packages, forbidden):
    found = []
    for package in packages:
        for path in files(package):
            for name in imported_modules(path):
                if name == forbidden or name.startswith(forbidden + "."):
                    found.append(f"{path.relative_to(ROOT.parent)} imports {name}")
    return found


def test_unprivileged_side_never_imports_the_supervisor():
    assert offenders(UNPRIVILEGED, "agent.supervisor") == []


@pytest.mark.parametrize("forbidden", [f"agent.{p}" for p in UNPRIVILEGED])
def test_supervisor_never_imports_the_unprivileged_side(forbidden):
    assert files("supervisor"), "agent/supervisor has no modules?"
    assert offenders(("supervisor",), forbidden) == []


def test_the_checker_sees_every_import_form(tmp_path, monkeypatch):
    package = tmp_path / "agent" / "worker"
    package.mkdir(parents=True)
    (package / "bad.py").write_text(
        "def f():\n    from ..supervisor import ops\n"
        "import agent.supervisor.seam\n"
        "from agent.supervisor.main import run_main\n"
        "importlib.import_module('agent.supervisor.arbiter')\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path / "agent")
    assert sorted(offenders(("worker",), "agent.supervisor")) == sorted(
        f"agent/worker/bad.py imports {name}" for name in (
            "agent.supervisor.seam", "agent.supervisor", "agent.supervisor.ops",
            "agent.supervisor.main", "agent.supervisor.main.run_main", "agent.supervisor.arbiter"))


def _touches_docker_errors(node):
    if isinstance(node, ast.ExceptHandler):
        return node.type is not None and "docker.errors" in ast.unparse(node.type)
    if isinstance(node, ast.Import):
        return any(alias.name.startswith("docker.errors") for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        return node.module == "docker.errors" or (node.module == "docker" and
                                                  any(a.name == "errors" for a in node.names))
    return isinstance(node, ast.Attribute) and ast.unparse(node) == "docker.errors"


def test_only_the_docker_adapter_touches_docker_errors():
    """One door per external system (docs/design.md): Docker's exceptions are imported, caught
    and translated in the engine adapter, agent/services/docker/, and nowhere else."""
    adapter = ROOT / "services" / "docker"
    touching = []
    for path in sorted(ROOT.rglob("*.py")):
        if adapter in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if _touches_docker_errors(node):
                touching.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}")
    assert touching == []


def test_the_docker_errors_check_sees_each_form():
    for text in ("import docker.errors", "from docker.errors import NotFound", "from docker import errors",
                 "docker.errors.create_api_error_from_http_exception(e)",
                 "try:\n    pass\nexcept docker.errors.NotFound:\n    pass"):
        assert any(_touches_docker_errors(n) for n in ast.walk(ast.parse(text))), text
    assert not any(_touches_docker_errors(n) for n in ast.walk(ast.parse("import docker.types")))


@pytest.mark.parametrize("forbidden", ["agent.worker", "agent.handlers"])
def test_services_never_reach_up(forbidden):
    """Imports flow handlers -> services; what a service needs from the worker (the job port,
    the identity loader) is handed in when it is built (docs/design.md)."""
    assert offenders(("services",), forbidden) == []


def test_only_the_docker_adapter_imports_docker_py():
    """docker-py itself (client, types, utils) is reached through services/docker/ only; the
    devserver, a separate program, builds its demo images with it directly."""
    allowed = (ROOT / "services" / "docker", ROOT / "devserver")
    importing = []
    for path in sorted(ROOT.rglob("*.py")):
        if any(place in path.parents for place in allowed):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(name == "docker" or name.startswith("docker.") for name in names):
                importing.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}")
    assert importing == []
