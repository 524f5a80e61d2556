"""What a handler gets besides its request: the call's context.

The worker's dispatcher builds one per call; services that run work of their own (a scheduled
backup) build one too, which is why it lives with the services. Handlers use it to reach the
services, push events, check for cancellation, register secrets and cleanup,
mark the point of no return and call the control plane.
"""

import time

from agent import log
from agent.errors import AgentError
from agent.protocol import events


class CallContext:
    def __init__(self, services, command, call_id=None, deadline=None, operation=None,
                 emit=None, call_server=None):
        self.services = services
        self.cfg = services.cfg if services is not None else None
        self.command = command
        self.call_id = call_id
        self.deadline = deadline          # time.monotonic() value, or None
        self.operation = operation        # the dispatcher's Job of an operation (agent/worker/operations.py), or None
        self._emit = emit
        self._call_server = call_server
        self._cleanups = []
        self.secrets = []

    def emit(self, event, data):
        """Push an event to the control plane. Its schema and whether it waits in the outbox
        while disconnected come from agent/protocol/events.py."""
        events.check_if_strict(event, data)    # tests: a fake emit target sees checked events
        if self._emit is not None:
            self._emit(event, data)

    def call_server(self, event, data, timeout=30.0):
        """An agent -> server call (docs/commands.md, "Agent -> server calls"); raises AgentError(unavailable)."""
        if self._call_server is None:
            raise AgentError("unavailable", "control plane is not connected")
        return self._call_server(event, data, timeout)

    def remaining(self):
        """Seconds until the deadline (None when there is none)."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def check(self):
        """Raise the operation's cancellation or deadline error if it has one."""
        if self.operation is not None:
            self.operation.raise_if_stopped()
        elif self.deadline is not None and time.monotonic() >= self.deadline:
            raise AgentError("deadline_exceeded", f"{self.command}: deadline exceeded")

    def set_phase(self, phase):
        if self.operation is not None:
            self.operation.phase = phase

    def point_of_no_return(self):
        """From now on a cancel answers not_cancellable and the work completes."""
        if self.operation is not None:
            self.operation.pass_point_of_no_return()

    def on_cancel(self, callback):
        """Run ``callback()`` if the operation is cancelled (kill children, close streams)."""
        if self.operation is not None:
            self.operation.add_cleanup(callback)

    def secret(self, value):
        """Redact ``value`` from logs, errors and events of this call."""
        if value:
            log.hold_secret(value)         # reference-counted: see agent/log.py
            self.secrets.append(value)

    def close(self):
        secrets, self.secrets = self.secrets, []
        for value in secrets:
            log.release_secret(value)
