"""The explicit command registry (locust's ``register_message``, docs/design.md, "Habits").

A command is a name, a thin handler function ``func(ctx, request) -> dict``,
the marshmallow schema its request is validated with before any greenlet is
spawned, and for long-running commands an :class:`OperationSpec` (docs/commands.md,
"Operations": operation id, serialisation key, deadline default and maximum).
"""

from dataclasses import dataclass
from typing import Callable, Optional


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


def by_service(request):
    """The usual serialisation key: the request's service_uid."""
    return request["service_uid"]
