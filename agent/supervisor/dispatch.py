"""Request -> reply for the allow-listed ops: the decisions, in order.

unknown op -> ``unknown_op``; listed in PULSEUP_DISABLED_COMMANDS ->
``permission_denied`` (docs/protocol.md, "Supervisor IPC"); arguments failing the op's schema ->
``invalid_argument``; over the op's rate -> ``rate_limited``; then the op runs.
An op's AgentError becomes ``invalid_argument``, ``permission_denied`` or
``failed`` (the agent code kept as ``reason`` so the worker can map it back).
"""

import collections
import threading
import time

from agent import log
from agent.errors import AgentError
from agent.protocol import ipc
from agent.protocol.fields import load_request
from agent.supervisor.ops import OPS, Call

_log = log.get("supervisor.dispatch")
_PASSED_THROUGH = {"invalid_argument", "permission_denied"}


class RateLimiter:
    """Sliding window per op: at most ``count`` accepted requests per ``period`` seconds."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.accepted = collections.defaultdict(collections.deque)
        self.lock = threading.Lock()      # requests run on threads

    def allow(self, name, count, period):
        with self.lock:
            now, window = self.clock(), self.accepted[name]
            while window and now - window[0] >= period:
                window.popleft()
            if len(window) >= count:
                return False
            window.append(now)
            return True


class OpDispatcher:
    def __init__(self, host, ops=None, clock=time.monotonic):
        self.host = host
        self.ops = OPS if ops is None else ops
        self.limiter = RateLimiter(clock)

    def handle(self, request, peer=None):
        """(reply, call) for a validated request envelope; call is None when the op did not run."""
        rid, name = request["id"], request["op"]
        op = self.ops.get(name)
        if op is None:
            return ipc.error_reply(rid, "unknown_op", f"unknown op: {name[:128]}"), None
        if name in self.host.cfg.pulseup_disabled_commands:
            return ipc.error_reply(rid, "permission_denied", f"{name} is disabled on this host"), None
        try:
            args = load_request(op.schema(), request["args"])
        except AgentError as exc:
            return _error_reply(rid, exc), None
        if not self.limiter.allow(name, *op.rate):
            return ipc.error_reply(rid, "rate_limited", f"{name}: at most {op.rate[0]} per {op.rate[1]:g} s"), None
        call = Call(self.host, peer, min(request["timeout"] or op.timeout, op.timeout))
        return self._run(rid, name, op, call, args), call

    def _run(self, rid, name, op, call, args):
        try:
            return ipc.ok_reply(rid, op.func(call, args))
        except AgentError as exc:
            return _error_reply(rid, exc)
        except Exception as exc:  # an op bug must not take the supervisor down
            _log.exception("op %s crashed", name)
            call.after.clear()
            return ipc.error_reply(rid, "failed", f"internal error: {exc.__class__.__name__}", reason="internal")


def _error_reply(rid, exc):
    details = exc.reply_data()
    code = details.pop("code")
    if code in _PASSED_THROUGH:
        return ipc.error_reply(rid, code, exc.message, **details)
    return ipc.error_reply(rid, "failed", exc.message, reason=code, **details)
