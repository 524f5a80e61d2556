"""The explicit command registry (locust's ``register_message``, docs/design.md, "Habits").

A command is a name, a thin handler function ``func(ctx, request) -> dict``,
the marshmallow schema its request is validated with before any greenlet is
spawned, and for long-running commands an :class:`~agent.operations.OperationSpec`
(docs/commands.md, "Operations": operation id, serialisation key, deadline default and maximum).
"""

from dataclasses import dataclass
from typing import Callable, Optional

from agent.operations import OperationSpec


@dataclass(frozen=True)
class Command:
    name: str
    func: Callable
    schema: object = None          # marshmallow Schema instance, None = no validation
    operation: Optional[OperationSpec] = None
    raw: bool = False              # handler receives data verbatim (agent.ping echoes null)
    privileged: bool = False       # needs the supervisor
    wrappable: bool = True         # reachable through the `command` / `call` wrappers
    error_details: Optional[Callable] = None   # exc -> extra fields of every failure's data


class Registry:
    def __init__(self):
        self._commands = {}

    def add(self, name, func, schema=None, operation=None, raw=False, privileged=False, wrappable=True,
            error_details=None):
        if name in self._commands:
            raise ValueError(f"command {name!r} is already registered")
        self._commands[name] = Command(name, func, schema, operation, raw, privileged, wrappable, error_details)

    def command(self, name, schema=None, operation=None, raw=False, privileged=False, wrappable=True):
        """Decorator form of :meth:`add`."""
        def decorate(func):
            self.add(name, func, schema, operation, raw, privileged, wrappable)
            return func
        return decorate

    def get(self, name):
        return self._commands.get(name)

    def names(self):
        return sorted(self._commands)

    def __contains__(self, name):
        return name in self._commands

    def __len__(self):
        return len(self._commands)
