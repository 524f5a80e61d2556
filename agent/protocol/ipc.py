"""Supervisor <-> worker IPC: framing and message schemas (docs/protocol.md, "Supervisor IPC").

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8
JSON holding one object; at most 1 MiB. A request is ``{"id", "op", "args"}``
(plus an optional ``timeout`` in seconds: how long the client waits, which
bounds the op's work too, except a package run that outlives the wait,
docs/operations.md); a reply is ``{"id", "ok", "result"}`` or
``{"id", "ok": false, "error": {"code", "message", ...}}``. Requests may be
pipelined: ids correlate replies.

Pure data, shared by both processes: no sockets are created here.
"""

import json
import struct

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from agent.protocol.fields import StrictBoolean, StrictNumber, StrictString
from agent.values import TruncatedFrame, read_exactly

MAX_FRAME = 1024 * 1024
HEADER = struct.Struct(">I")
ID_MAX = 64

# The op names: the keys of the supervisor's allow-list (agent/supervisor/ops.py, OPS) and
# what the worker side sends. A test checks that every name the worker uses is in OPS.
OP_SYSTEM_REBOOT = "system.reboot"
OP_SYSTEM_SHUTDOWN = "system.shutdown"
OP_SYSTEM_UPDATE_PACKAGES = "system.update_packages"
OP_SYSTEM_PACKAGE_STATUS = "system.package_status"
OP_SERVICE_RESTART = "service.restart"
OP_DISK_CLEANUP_LOGS = "disk.cleanup_logs"
OP_DISK_CLEANUP_TEMP = "disk.cleanup_temp"
OP_AGENT_UNINSTALL = "agent.uninstall"
OP_AGENT_UPDATE_INSTALL = "agent.update.install"
OP_SSH_KEYS_ADD = "ssh.authorized_keys.add"
OP_SSH_KEYS_REMOVE = "ssh.authorized_keys.remove"
OP_WORKER_STATUS = "worker.status"
OP_SUPERVISOR_STATUS = "supervisor.status"

# docs/protocol.md, "Supervisor IPC"
ERROR_CODES = frozenset({
    "unknown_op", "invalid_argument", "rate_limited", "failed", "frame_too_large", "permission_denied",
})


class FrameError(Exception):
    """A frame that is not a JSON object: the connection is closed (docs/protocol.md, "Supervisor IPC")."""


class FrameTooLarge(FrameError):
    """A frame over MAX_FRAME: answered ``frame_too_large``, then the connection is closed."""


class _Loose(Schema):
    class Meta:
        unknown = EXCLUDE


class RequestEnvelope(_Loose):
    id = StrictString(required=True, validate=validate.Length(min=1, max=ID_MAX))
    op = StrictString(required=True, validate=validate.Length(min=1, max=128))
    args = fields.Dict(keys=fields.String(), load_default=dict, allow_none=True)
    timeout = StrictNumber(load_default=None, allow_none=True, validate=validate.Range(min=0, min_inclusive=False))


class ErrorBody(Schema):
    class Meta:
        unknown = "include"

    code = StrictString(required=True)
    message = StrictString(required=True)


class ReplyEnvelope(_Loose):
    id = StrictString(required=True, allow_none=True)
    ok = StrictBoolean(required=True)
    result = fields.Dict(load_default=dict, allow_none=True)
    error = fields.Nested(ErrorBody, load_default=None, allow_none=True)


def recv_exact(sock, count):
    """``count`` bytes of a frame from ``sock``; None on a clean close before the first
    byte; FrameError when the peer closes inside a frame."""
    try:
        return read_exactly(sock.recv, count)
    except TruncatedFrame as exc:
        raise FrameError("connection closed inside a frame") from exc


def encode(message):
    """One frame (header + body) for ``message``; raises FrameTooLarge."""
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(body) > MAX_FRAME:
        raise FrameTooLarge(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return HEADER.pack(len(body)) + body


def body_length(header):
    """The body length announced by a 4-byte header; raises FrameTooLarge."""
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise FrameTooLarge(f"frame of {length} bytes exceeds {MAX_FRAME}")
    return length


def decode(body):
    """The JSON object in a frame body; raises FrameError for anything else."""
    try:
        # json's C scanner turns absurd nesting into RecursionError, never a crash
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FrameError(f"not a JSON object: {exc.__class__.__name__}") from None
    if not isinstance(value, dict):
        raise FrameError("not a JSON object")
    return value


def load_request(message):
    """(request dict, None) or (None, error message) for a decoded request object."""
    try:
        request = RequestEnvelope().load(message)
    except ValidationError as exc:
        field = sorted(exc.messages)[0]
        return None, f"{field}: {_flatten(exc.messages[field])}"
    if request["args"] is None:
        request["args"] = {}
    return request, None


def load_reply(message):
    """A validated reply dict; raises FrameError when it is not a reply."""
    try:
        return ReplyEnvelope().load(message)
    except ValidationError as exc:
        raise FrameError(f"malformed reply: {exc.messages}") from None


def _flatten(messages):
    if isinstance(messages, list):
        return "; ".join(str(m) for m in messages)
    return str(messages)


def ok_reply(request_id, result):
    return {"id": request_id, "ok": True, "result": result if result is not None else {}}


def error_reply(request_id, code, message, **details):
    if code not in ERROR_CODES:
        raise ValueError(f"unknown IPC error code {code!r}")
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message, **details}}
