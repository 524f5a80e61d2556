"""Strict marshmallow fields and the base schema of every command request.

docs/commands.md, "Requests": integers must be JSON integers (``"8080"`` and ``8080.5`` are
refused), booleans JSON booleans; unknown keys are ignored; a key differing
only in letter case is accepted when the exact key is absent.
"""

import re

from marshmallow import EXCLUDE, Schema, ValidationError, fields, pre_load, validate

from agent.errors import AgentError

# Every pattern here and in the schemas is anchored at both ends with fullmatch or \Z: `$`
# also matches before a final newline, so "abc\n" would pass (issue 17 item 6).
UID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z"
UID_RE = re.compile(UID_PATTERN)


class StrictInteger(fields.Integer):
    default_error_messages = {"invalid": "must be an integer"}

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.make_error("invalid")
        return value


class StrictBoolean(fields.Boolean):
    default_error_messages = {"invalid": "must be a boolean"}

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class StrictNumber(fields.Float):
    default_error_messages = {"invalid": "must be a number"}

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid")
        return float(value)


class StrictString(fields.String):
    default_error_messages = {"invalid": "must be a string"}


class FullMatch(validate.Regexp):
    """``validate.Regexp`` that must match the whole value: marshmallow's uses ``re.match``,
    which accepts a trailing newline after a ``$`` and any suffix without one."""

    def __call__(self, value):
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


def matching(regex):
    """A :class:`FullMatch` validator whose message shows the pattern.

    marshmallow formats the message with str.format, so the pattern's braces
    ({0,63}) are escaped; unescaped they raise KeyError instead of a refusal.
    """
    pattern = regex.pattern if hasattr(regex, "pattern") else regex
    shown = "^" + pattern.removeprefix("^").removesuffix("\\Z").removesuffix("$") + "$"   # the usual spelling
    error = "must match " + shown.replace("{", "{{").replace("}", "}}")
    return FullMatch(regex, error=error)


def printable(minimum=None, maximum=None):
    """Length bounds and no control character (newline, NUL, ...): names and paths that end up
    in files, URLs or scripts (docs/security.md, "Validators and shell scripts")."""
    return [validate.Length(minimum, maximum),
            FullMatch(r"[^\x00-\x1f\x7f]*", error="must not contain control characters")]


# a POSIX login name (useradd(8): [a-z_][a-z0-9_-]*[$]?, at most 32 characters)
USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,30}\$?\Z")


def Uid(**kwargs):
    """service_uid / deployment_uid / backup_uid (docs/commands.md, "Identifiers and values")."""
    return StrictString(validate=matching(UID_RE), **kwargs)


class RequestSchema(Schema):
    """Base of every command's request schema."""

    class Meta:
        unknown = EXCLUDE

    @pre_load
    def _fold_case(self, data, **kwargs):
        if not isinstance(data, dict):
            raise ValidationError("request data must be an object", "_schema")
        folded = dict(data)
        for name, field in self.fields.items():
            key = field.data_key or name
            if key in data:
                continue
            for candidate in data:
                if isinstance(candidate, str) and candidate.lower() == key.lower():
                    folded[key] = data[candidate]
                    break
        return folded


class NoArguments(RequestSchema):
    """A command or supervisor op without request fields (unknown keys are ignored)."""


def load_request(schema, data):
    """Validate ``data`` with ``schema`` (an instance); AgentError(invalid_argument) on failure."""
    try:
        return schema.load({} if data is None else data)
    except ValidationError as exc:
        field, message = _first_error(exc.messages)
        if field in (None, "_schema"):
            raise AgentError("invalid_argument", message) from None
        raise AgentError("invalid_argument", f"{field}: {message}", field=field) from None


def _first_error(messages, prefix=""):
    if isinstance(messages, list):
        return (prefix.rstrip(".") or None), "; ".join(str(m) for m in messages)
    if isinstance(messages, dict):
        key = sorted(messages, key=str)[0]
        return _first_error(messages[key], f"{prefix}{key}.")
    return (prefix.rstrip(".") or None), str(messages)
