"""The WebSocket envelope: decoding, classification and the frames the agent sends.

protocol.md section 2 and decisions 1: every incoming text frame becomes a
:class:`Message` or raises :class:`ProtocolError` (answered with an
``invalid_message`` error frame, never a disconnect).
"""

import json
from dataclasses import dataclass, field
from typing import Any, Optional

from marshmallow import EXCLUDE, Schema, ValidationError, fields

from agent.errors import AgentError

# Outbound events kept in the outbox while disconnected (commands.md 3.1);
# every other event is dropped when it cannot be sent.
DURABLE_EVENTS = frozenset({
    "update_service_status", "update_deployment_status", "rollback_status_update",
    "backup_status_update", "backup_download_status", "domain_status_update",
    "container_stopped", "monitoring_alert", "update_docker_config", "update_nixpacks_config",
    "deployment_log_chunk",
})
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "upload_completed", "upload_failed"})
MAX_OUTBOUND_BYTES = 512 * 1024


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


def decode(text):
    """Parse one frame; raises ProtocolError for anything that is not an envelope."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:  # bad JSON, too deep, int digit limit
        raise ProtocolError(f"invalid JSON: {str(exc)[:200]}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("a frame must be a JSON object")
    try:
        env = _ENVELOPE.load(obj)
    except ValidationError as exc:
        key = sorted(exc.messages)[0]
        call_id = obj.get("call_id") if isinstance(obj.get("call_id"), str) else None
        raise ProtocolError(f"{key} must be a string", call_id=call_id) from None
    return _classify(env, obj)


def _classify(env, obj):
    kind, event, data = env["type"], env["event"], env["data"]
    present = "data" in obj
    if kind is None:
        # decisions 1: without a string type only the legacy command form is valid
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
    message.wrapped = True
    if not isinstance(data, dict) or not isinstance(data.get("command"), str) or not data["command"]:
        message.event, message.wrapper_error = "command", "invalid command format"
        return message
    message.event = data["command"]
    message.data_present = "data" in data
    message.data = data.get("data")
    return message


def _unwrap_call(message, data):
    message.wrapped = True
    inner_ok = (isinstance(data, dict) and isinstance(data.get("event"), str) and data["event"]
                and data.get("type", "call") == "call")
    if not inner_ok:
        message.event, message.wrapper_error = "call", "invalid call message format"
        return message
    message.event = data["event"]
    message.data_present = "data" in data
    message.data = data.get("data")
    return message


def encode(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def response_frame(call_id, success, data=None, error="", code=""):
    return {"type": "response", "call_id": call_id,
            "data": {"success": success, "data": data, "error": error, "code": code}}


def error_response(call_id, exc: AgentError, operation_id=None):
    data = exc.reply_data()
    if operation_id:
        data["operation_id"] = operation_id
    return response_frame(call_id, False, data, exc.message, exc.code)


def legacy_response(success, data=None, error="", code=""):
    """decisions 4: the legacy reply carries `code` too."""
    return {"event": "command_response",
            "data": {"success": success, "data": data, "error": error, "code": code}}


def event_frame(event, data):
    return {"type": "event", "event": event, "data": data}


def error_frame(code, message):
    return {"type": "error", "data": {"code": code, "message": message}}


def is_terminal_event(frame):
    data = frame.get("data")
    return isinstance(data, dict) and data.get("status") in TERMINAL_STATUSES
