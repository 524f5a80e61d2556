"""The WebSocket envelope: decoding, classification and the frames the agent sends.

docs/commands.md, "Requests" and docs/protocol.md, "Dispatch": every incoming text frame becomes a
:class:`Message` or raises :class:`ProtocolError` (answered with an
``invalid_message`` error frame, never a disconnect).
"""

import collections
import json
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from marshmallow import EXCLUDE, Schema, ValidationError, fields

from agent.errors import AgentError

_log = logging.getLogger("agent.envelope")

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "upload_completed", "upload_failed"})
MAX_OUTBOUND_BYTES = 512 * 1024
# A \uD800-\uDFFF escape in a frame: json.loads turns an unpaired one into a lone surrogate,
# which no UTF-8 encoder can write back (docs/protocol.md, "Strings").
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
unencodable = collections.Counter()     # event name -> outbound events dropped as unencodable


class ProtocolError(Exception):
    """A frame that is not a valid envelope; ``code`` goes into the error frame."""

    def __init__(self, message, code="invalid_message", call_id=None):
        super().__init__(message)
        self.code = code
        self.call_id = call_id


class _Envelope(Schema):
    class Meta:
        unknown = EXCLUDE

    type = fields.String(load_default=None)
    event = fields.String(load_default=None)
    call_id = fields.String(load_default=None)
    data = fields.Raw(load_default=None, allow_none=True)


_ENVELOPE = _Envelope()
_ENVELOPE_KEYS = ("type", "event", "call_id")


@dataclass
class Message:
    type: str                      # auth_challenge, call, event, legacy, cancel, ...
    event: Optional[str] = None    # command name for call/event/legacy
    call_id: Optional[str] = None
    data: Any = None
    data_present: bool = True
    wrapper_error: Optional[str] = None   # malformed wrapper: answered invalid_argument
    wrapped: bool = False                 # came through a `command`/`call` wrapper
    raw: dict = field(default_factory=dict)


class EncodeError(ValueError):
    """An outbound frame that cannot be written as strict UTF-8 JSON; says what and where."""


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


def _finite_float(text):
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def decode(text):
    """Parse one frame; raises ProtocolError for anything that is not an envelope.

    ``text`` is the frame's payload (bytes or str). Strings the agent could never write back
    (unpaired surrogates) and numbers that are not finite are refused here, so nothing that
    reaches a handler can poison an answer.
    """
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    try:
        obj = _DECODER.decode(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, too deep, int digit limit
        raise ProtocolError(f"invalid JSON: {str(exc)[:200]}") from None
    if _SURROGATE_ESCAPE.search(raw):
        _refuse_surrogates(obj)
    if not isinstance(obj, dict):
        raise ProtocolError("a frame must be a JSON object")
    if all(isinstance(obj.get(key), (str, type(None))) for key in _ENVELOPE_KEYS):
        # the schema's checks, done inline for the common case (every frame goes through here)
        env = {"type": obj.get("type"), "event": obj.get("event"), "call_id": obj.get("call_id"),
               "data": obj.get("data")}
        return _classify(env, obj)
    try:
        env = _ENVELOPE.load(obj)
    except ValidationError as exc:
        key = sorted(exc.messages)[0]
        call_id = obj.get("call_id") if isinstance(obj.get("call_id"), str) else None
        raise ProtocolError(f"{key} must be a string", call_id=call_id) from None
    return _classify(env, obj)


def _refuse_surrogates(obj):
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError("a string holds an unpaired UTF-16 surrogate escape (\\uD800-\\uDFFF)") from None


def _classify(env, obj):
    kind, event, data = env["type"], env["event"], env["data"]
    present = "data" in obj
    if kind is None:
        # docs/protocol.md, "Dispatch": without a string type only the legacy command form is valid
        if event != "command":
            raise ProtocolError("missing string field: type")
        message = Message("legacy", call_id=env["call_id"], data=data, raw=obj)
        return _unwrap_command(message, data)
    if kind in ("call", "event"):
        if not event:
            raise ProtocolError(f"a {kind} needs a string event", call_id=env["call_id"])
        if kind == "call" and env["call_id"] is None:
            raise ProtocolError("a call needs a string call_id")
        message = Message(kind, event, env["call_id"], data, present, raw=obj)
        if event == "command":
            return _unwrap_command(message, data)
        if event == "call":
            return _unwrap_call(message, data)
        return message
    return Message(kind, event, env["call_id"], data, present, raw=obj)


def _unwrap_command(message, data):
    valid = isinstance(data, dict) and isinstance(data.get("command"), str) and data["command"]
    return _unwrapped(message, data, "command", valid, "command", "invalid command format")


def _unwrap_call(message, data):
    valid = (isinstance(data, dict) and isinstance(data.get("event"), str) and data["event"]
             and data.get("type", "call") == "call")
    return _unwrapped(message, data, "event", valid, "call", "invalid call message format")


def _unwrapped(message, data, key, valid, label, error):
    """The inner command of a wrapper: ``data[key]`` names it; an invalid wrapper keeps
    ``label`` as the event and the error to answer with."""
    message.wrapped = True
    if not valid:
        message.event, message.wrapper_error = label, error
        return message
    message.event = data[key]
    message.data_present = "data" in data
    message.data = data.get("data")
    return message


def encode(obj):
    """Strict UTF-8 JSON bytes of ``obj``; raises EncodeError naming what cannot be written."""
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:   # UnicodeEncodeError is a ValueError
        raise EncodeError(_describe_unencodable(obj, exc)) from None


def outbound(frame):
    """``(frame, bytes)`` ready for the socket or the outbox, or None for a dropped event.

    Checked before anything is queued or journaled (docs/protocol.md, "Outbound frames"): a
    response that cannot be encoded, or exceeds 512 KiB, becomes an ``internal`` error for its
    call_id; such an event is dropped (logged once per event name, counted in ``unencodable``):
    a stand-in under the event's name would break that event's schema on the control plane.
    """
    try:
        data = encode(frame)
    except EncodeError as exc:
        return _replacement(frame, f"could not be encoded: {exc}")
    if len(data) > MAX_OUTBOUND_BYTES:
        return _replacement(frame, "exceeds 512 KiB")
    return frame, data


def _replacement(frame, problem):
    kind = frame.get("type") if isinstance(frame, dict) else None
    if kind == "response":
        error = response_frame(frame.get("call_id"), False, None, f"internal error: reply {problem}", "internal")
        return error, encode(error)
    if frame.get("event") == "command_response":
        error = legacy_response(False, None, f"internal error: reply {problem}", "internal")
        return error, encode(error)
    name = str(frame.get("event") or kind)
    if not unencodable[name]:
        _log.error("dropping outbound %s %s: %s", kind, name, problem)
    unencodable[name] += 1
    return None


def _describe_unencodable(obj, exc, path="$"):
    """Where in ``obj`` the first value json cannot write strictly sits, and why."""
    bad = _first_bad(obj, path, depth=0)
    if isinstance(exc, UnicodeEncodeError):
        held = exc.object[exc.start:exc.end].encode("unicode_escape").decode("ascii")
        reason = f"text that is not valid UTF-8 (holds {held[:40]})"
    elif isinstance(exc, RecursionError):
        reason = "nested too deeply"
    else:
        reason = str(exc)[:120]
    return f"{bad or path}: {reason}"


def _first_bad(value, path, depth):
    if depth > 100:
        return path
    if isinstance(value, str):
        return None if _utf8_ok(value) else path
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if value is None or isinstance(value, (bool, int)):
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and not _utf8_ok(key):
                return f"{path}.<key>"
            found = _first_bad(item, f"{path}.{key}", depth + 1)
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _first_bad(item, f"{path}[{index}]", depth + 1)
            if found:
                return found
        return None
    return f"{path} ({type(value).__name__})"


def _utf8_ok(text):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def response_frame(call_id, success, data=None, error="", code=""):
    return {"type": "response", "call_id": call_id,
            "data": {"success": success, "data": data, "error": error, "code": code}}


def error_response(call_id, exc: AgentError, operation_id=None):
    data = exc.reply_data()
    if operation_id:
        data["operation_id"] = operation_id
    return response_frame(call_id, False, data, exc.message, exc.code)


def legacy_response(success, data=None, error="", code=""):
    """docs/protocol.md, "Dispatch": the legacy reply carries `code` too."""
    return {"event": "command_response",
            "data": {"success": success, "data": data, "error": error, "code": code}}


def event_frame(event, data):
    return {"type": "event", "event": event, "data": data}


def error_frame(code, message):
    return {"type": "error", "data": {"code": code, "message": message}}


def is_terminal_event(frame):
    data = frame.get("data")
    return isinstance(data, dict) and data.get("status") in TERMINAL_STATUSES
