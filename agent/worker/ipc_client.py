"""The worker's client of the supervisor's IPC socket (docs/protocol.md, "Supervisor IPC").

One connection, opened lazily on the first call and again after a loss, with
exponential backoff between failed attempts (a call inside the backoff window
fails at once: privileged commands answer ``unavailable`` promptly). Requests
are pipelined; a reader greenlet per connection, owned by the client's group,
routes replies to waiting callers by id. The call's timeout is sent along as
how long this call waits (a package run outlives it: docs/operations.md).

IPC refusals become AgentError codes at this boundary (docs/design.md, "Habits").
"""

import time
import uuid

import gevent
import gevent.event
import gevent.lock
import gevent.pool
from gevent import socket

from agent import log
from agent.errors import CODES, AgentError
from agent.protocol import ipc

_log = log.get("worker.ipc")
# `failed` carries the supervisor-side agent code as `reason`; these may pass through
_REASONS = frozenset(CODES) - {"invalid_message", "unauthenticated", "not_cancellable"}
_DETAILS = ("exit_code", "stderr_tail")


class SupervisorClient:
    def __init__(self, socket_path, backoff_initial=0.1, backoff_max=5.0):
        self.socket_path = socket_path
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self._sock = None
        self._pending = {}
        self._connect_lock = gevent.lock.Semaphore()
        self._write_lock = gevent.lock.Semaphore()
        self._group = gevent.pool.Group()
        self._delay = 0.0
        self._retry_at = 0.0
        self._last_error = None
        self._closed = False

    def call(self, op, args=None, timeout=30.0):
        """Run ``op`` on the supervisor and return its result dict.

        Raises AgentError: unavailable (not reachable, connection lost, rate
        limited), deadline_exceeded (no reply within timeout), permission_denied,
        invalid_argument, unimplemented (op unknown to the supervisor),
        command_failed / failed_precondition / ... (the op failed).
        """
        deadline = time.monotonic() + timeout
        sock = self._connection()
        rid = uuid.uuid4().hex
        waiter = self._pending[rid] = gevent.event.AsyncResult()
        try:
            self._send(sock, {"id": rid, "op": op, "args": args or {}, "timeout": timeout})
            reply = waiter.get(timeout=max(0.0, deadline - time.monotonic()))
        except gevent.Timeout:
            # the IPC has no cancel: the op goes on in the supervisor (system.update_packages:
            # system.package_status reports its outcome, docs/operations.md)
            raise AgentError("deadline_exceeded", f"supervisor did not answer {op} within {timeout:g} s; "
                             "the operation was not cancelled") from None
        finally:
            self._pending.pop(rid, None)
        return _result(op, reply)

    def close(self):
        self._closed = True
        self._drop(self._sock, "client closed")
        self._group.kill(timeout=1.0)

    # --- connection ---------------------------------------------------------
    def _connection(self):
        if self._closed:
            raise AgentError("unavailable", "supervisor is not reachable: client closed")
        with self._connect_lock:
            if self._sock is not None:
                return self._sock
            if time.monotonic() < self._retry_at:
                raise AgentError("unavailable", f"supervisor is not reachable: {self._last_error}")
            return self._connect()

    def _connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(5.0)
            sock.connect(self.socket_path)
            sock.settimeout(None)
        except OSError as exc:
            sock.close()
            self._last_error = f"{self.socket_path}: {exc.strerror or exc}"
            self._delay = min(self.backoff_max, max(self.backoff_initial, self._delay * 2))
            self._retry_at = time.monotonic() + self._delay
            raise AgentError("unavailable", f"supervisor is not reachable: {self._last_error}") from None
        self._delay, self._sock = 0.0, sock
        reader = self._group.spawn(self._read_loop, sock)
        reader.name = "ipc-reader"
        reader.link_exception(log.log_greenlet_crash)
        return sock

    def _send(self, sock, message):
        try:
            frame = ipc.encode(message)
        except ipc.FrameTooLarge as exc:
            raise AgentError("invalid_argument", f"request too large for the supervisor: {exc}") from None
        with self._write_lock:
            try:
                sock.sendall(frame)
            except OSError as exc:
                self._drop(sock, f"connection lost: {exc.strerror or exc}")
                raise AgentError("unavailable", f"supervisor is not reachable: {exc.strerror or exc}") from None

    def _read_loop(self, sock):
        reason = "connection closed by the supervisor"
        try:
            while True:
                header = ipc.recv_exact(sock, 4)
                if header is None:
                    break
                reply = ipc.load_reply(ipc.decode(ipc.recv_exact(sock, ipc.body_length(header)) or b""))
                self._deliver(reply)
        except (OSError, ipc.FrameError) as exc:
            reason = f"connection lost: {exc}"
        finally:
            self._drop(sock, reason)

    def _deliver(self, reply):
        waiter = self._pending.get(reply["id"]) if reply["id"] is not None else None
        if waiter is not None:
            waiter.set(reply)
        elif reply["id"] is None:      # frame_too_large and the like: the connection ends
            for waiter in list(self._pending.values()):
                waiter.set(reply)

    def _drop(self, sock, reason):
        if sock is None:
            return
        if self._sock is sock:
            self._sock = None
        sock.close()
        lost = AgentError("unavailable", f"supervisor is not reachable: {reason}")
        for waiter in list(self._pending.values()):
            if not waiter.ready():
                waiter.set_exception(lost)


def _result(op, reply):
    if reply["ok"]:
        return reply["result"] or {}
    error = reply["error"] or {"code": "failed", "message": "no error given"}
    code, message = error["code"], error["message"]
    details = {key: error[key] for key in _DETAILS if key in error}
    if code in ("permission_denied", "invalid_argument"):
        raise AgentError(code, message, field=error.get("field"), **details)
    if code == "rate_limited":
        raise AgentError("unavailable", f"supervisor is rate limiting {op}: {message}")
    if code == "unknown_op":
        raise AgentError("unimplemented", f"the supervisor does not provide {op}")
    if code == "frame_too_large":
        raise AgentError("invalid_argument", f"request too large for the supervisor: {message}")
    reason = error.get("reason")
    raise AgentError(reason if reason in _REASONS else "command_failed", message, **details)
