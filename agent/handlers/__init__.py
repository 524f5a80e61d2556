"""Thin command functions; :func:`build_registry` wires every module in."""

import importlib

from agent.handlers.registry import Registry

MODULES = (
    "agent.handlers.agent",
    "agent.handlers.system",
    "agent.handlers.agent_commands",
    "agent.handlers.lifecycle",
    "agent.handlers.logs",
    "agent.handlers.monitoring",
    "agent.handlers.database",
    "agent.handlers.backups",
    "agent.handlers.deploy",
    "agent.handlers.domains",
    "agent.handlers.update",
)


def build_registry(modules=MODULES):
    """A registry holding every command of the given handler modules.

    A module that is not part of this build (ImportError on the module
    itself) is skipped; any other error is a bug and propagates.
    """
    registry = Registry()
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(registry)
    return registry
