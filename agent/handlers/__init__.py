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
    """A registry holding every command of the given handler modules (duplicates refused)."""
    registry = Registry()
    for name in modules:
        importlib.import_module(name).register(registry)
    return registry
