"""Logging: JSON lines to stderr, secret redaction, a ring buffer, crash logging.

Every record passes one :class:`RedactingFilter` that removes registered
secret values (join token, access tokens, passwords: docs/security.md), values of
keys that look secret in ``extra`` (whatever their case), and PEM private key
blocks; secrets held by a call are reference-counted (docs/security.md, "Secret
redaction"). A :class:`RingBuffer` keeps the last lines for ``agent.logs.fetch``.
"""

import collections
import logging
import re
import sys
import threading
import time

from pythonjsonlogger.json import JsonFormatter

MASK = "***"
SECRET_KEY = re.compile(r"token|password|passwd|secret|private_key|authorization|credential", re.I)
PRIVATE_KEY_BLOCK = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S)
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "component"}
_MIN_SECRET_LEN = 4  # shorter values would mask ordinary words

_permanent = set()                  # registered for the life of the process
_held = collections.Counter()       # value -> number of calls holding it
_snapshot = ()                      # every masked value, longest first (read without the lock)
_secrets_lock = threading.Lock()


def _valid(value):
    return isinstance(value, str) and len(value) >= _MIN_SECRET_LEN


def _refresh():
    global _snapshot
    _snapshot = tuple(sorted(_permanent | set(_held), key=len, reverse=True))


def register_secret(value):
    """Redact ``value`` from every log line for the life of the process (join token, git
    tokens, passwords the agent keeps)."""
    if _valid(value):
        with _secrets_lock:
            _permanent.add(value)
            _refresh()


def hold_secret(value):
    """Redact ``value`` while at least one holder has not released it (one call's secrets:
    two concurrent calls may share a token or a password, issue 17 item 4)."""
    if _valid(value):
        with _secrets_lock:
            _held[value] += 1
            _refresh()


def release_secret(value):
    """Undo one :func:`hold_secret`; the value stays masked while another holder or a
    process-lifetime registration remains."""
    if _valid(value):
        with _secrets_lock:
            if _held[value] <= 1:
                del _held[value]
            else:
                _held[value] -= 1
            _refresh()


def forget_secret(value):
    """Drop a process-lifetime registration (tests); holds are untouched."""
    with _secrets_lock:
        _permanent.discard(value)
        _refresh()


def is_masked(value):
    return value in _snapshot


def redact(text):
    """``text`` with registered secrets and private key blocks masked."""
    if not isinstance(text, str):
        return text
    text = PRIVATE_KEY_BLOCK.sub(MASK, text)
    for secret in _snapshot:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_value(key, value):
    """Redact one ``extra`` value: wholly when its key looks secret."""
    if isinstance(key, str) and SECRET_KEY.search(key):
        return MASK if value not in (None, "") else value
    if isinstance(value, dict):
        return {k: redact_value(k, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(None, v) for v in value]
    return redact(value)


class RedactingFilter(logging.Filter):
    def filter(self, record):
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = redact(message), None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        for key, value in list(record.__dict__.items()):
            if key not in _RESERVED:
                record.__dict__[key] = redact_value(key, value)
        return True


class ComponentFilter(logging.Filter):
    """Adds ``component``: the logger name below ``agent.``."""

    def filter(self, record):
        if not hasattr(record, "component"):
            record.component = record.name.removeprefix("agent.")
        return True


class RingBuffer(logging.Handler):
    """The last ``capacity`` formatted lines, for agent.logs.fetch."""

    def __init__(self, capacity=5000):
        super().__init__()
        self.lines = collections.deque(maxlen=capacity)

    def emit(self, record):
        try:
            self.lines.append(self.format(record))
        except Exception:  # a log line must never break the caller
            self.handleError(record)

    def tail(self, count):
        return list(self.lines)[-count:]


class _Json(JsonFormatter):
    def formatTime(self, record, datefmt=None):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


def _formatter(fmt):
    if fmt == "text":
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(component)s: %(message)s")
        formatter.converter = time.gmtime
        return formatter
    return _Json(
        "%(asctime)s %(levelname)s %(message)s %(component)s",
        rename_fields={"asctime": "time", "levelname": "level", "message": "msg"},
    )


ring = RingBuffer()


def setup(level="INFO", fmt="json", stream=None):
    """Configure the ``agent`` logger tree; safe to call again (tests, reload)."""
    root = logging.getLogger("agent")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    for target in (handler, ring):
        target.setFormatter(_formatter(fmt))
        target.filters[:] = [ComponentFilter(), RedactingFilter()]
        root.addHandler(target)
    root.setLevel(level.upper())
    root.propagate = False
    return root


def get(component):
    return logging.getLogger(f"agent.{component}")


def log_greenlet_crash(greenlet):
    """``link_exception`` target: every long-lived greenlet's crash is logged."""
    get("greenlets").error(
        "greenlet %s crashed: %r", getattr(greenlet, "name", greenlet), greenlet.exception,
        exc_info=(type(greenlet.exception), greenlet.exception, greenlet.exception.__traceback__),
    )
