"""Parsers for the value forms shared by settings and requests, :func:`rfc3339`, the
one formatter of timestamps, and :func:`read_exactly`, the one reader of fixed-size frames.

Each parser takes a string and returns the parsed value or raises
``ValueError`` whose message is the expected form; callers add the key and
where the value came from.
"""

import re
import time
from datetime import datetime, timezone

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_GROUP = re.compile(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)")
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE = re.compile(r"(\d+)\s*([a-z]*)")


def parse_bool(text):
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError("a boolean: true/false, 1/0, yes/no, on/off")


def parse_duration(text):
    """Seconds as a float from ``30``, ``2.5``, ``90s``, ``5m``, ``1h30m``."""
    word = text.strip()
    try:
        seconds = float(word)
    except ValueError:
        seconds = _parse_duration_groups(word)
    if seconds < 0 or seconds != seconds:
        raise ValueError("a non-negative duration like 30, 90s, 5m or 1h30m")
    return seconds


def _parse_duration_groups(word):
    position, total = 0, 0.0
    for match in _DURATION_GROUP.finditer(word):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(word) or not word:
        raise ValueError("a duration like 30, 90s, 5m or 1h30m")
    return total


def parse_size(text):
    """Bytes from ``1048576``, ``16MiB``, ``64 MB``."""
    match = _SIZE.fullmatch(text.strip().lower())
    if not match or match.group(2) not in _SIZE_UNITS:
        raise ValueError("a size in bytes, or with a unit like 512KiB, 16MiB, 1GiB")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def parse_int(text, minimum=None, maximum=None):
    try:
        value = int(text.strip(), 10)
    except ValueError:
        raise ValueError("an integer") from None
    if minimum is not None and value < minimum or maximum is not None and value > maximum:
        raise ValueError(f"an integer between {minimum} and {maximum}")
    return value


def parse_list(text, separator=","):
    return tuple(item.strip() for item in text.split(separator) if item.strip())


def format_duration(seconds):
    """The shortest exact form of a duration, for `check-config` output."""
    if seconds and seconds == int(seconds):
        for unit, size in (("h", 3600), ("m", 60)):
            if seconds % size == 0:
                return f"{int(seconds // size)}{unit}"
        return f"{int(seconds)}s"
    return f"{seconds:g}s"


def rfc3339(epoch=None, precision="us"):
    """``epoch`` (now when None) as RFC 3339 UTC with a ``Z`` suffix. ``precision``: ``"s"``
    (whole seconds, truncated), ``"ms"`` (three digits, truncated), ``"us"`` (six digits,
    rounded) or ``"auto"`` (six digits, left out when they are all zero)."""
    epoch = time.time() if epoch is None else epoch
    if precision == "s":
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    if precision == "ms":
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    if precision == "us":
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if precision == "auto":
        return moment.isoformat().replace("+00:00", "Z")
    raise ValueError(f"unknown precision {precision!r}")


class TruncatedFrame(EOFError):
    """The stream ended after part of a fixed-size read."""


def read_exactly(read, count):
    """``count`` bytes from ``read(n)`` (a socket's recv, a file's read1); None when the
    stream ends before the first byte; TruncatedFrame when it ends after part of them."""
    data = b""
    while len(data) < count:
        part = read(count - len(data))
        if not part:
            if data:
                raise TruncatedFrame(f"stream ended after {len(data)} of {count} bytes")
            return None
        data += part
    return data
