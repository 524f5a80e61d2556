"""Container logs: Docker's multiplexed log stream read frame by frame, and the fetch command.

Docker sends the logs of a container without a TTY as frames of an 8-byte header (stream
type byte, 3 zero bytes, big-endian uint32 length) plus payload (Docker Engine API,
"Attach to a container", stream format). Reading the frames ourselves keeps stdout and stderr
apart over one connection, in the engine's order; docker-py's ``logs(stream=True)`` would
drop the stream type. A container with a TTY sends raw bytes (all of it is stdout).
"""

import collections
import json
import re
import struct
import time

from agent.errors import AgentError
from agent.services.docker import parse_docker_time, translate
from agent.values import parse_duration

HEADER = struct.Struct(">BxxxL")
STREAMS = {0: "stdout", 1: "stdout", 2: "stderr"}   # 0 is stdin, echoed only with a TTY
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
MAX_LINE_BYTES = 64 * 1024        # longer lines are cut into pieces of this size
READ_BYTES = 256 * 1024           # one read of a chunked log body
MAX_CHUNK_LINE = 1024             # a chunk-size line longer than this is not HTTP
MAX_CHUNK_BYTES = 8 << 20         # the engine's chunks hold one frame (json-file entries are <= 16 KiB)
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,8})(?:;[^\r\n]*)?")
FETCH_BUDGET = 448 * 1024         # JSON bytes of `logs`, leaving room in a 512 KiB frame
_RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z\Z")


def parse_since(value, now=None):
    """Epoch seconds from a duration string (``10m`` = ten minutes ago) or an RFC 3339 UTC
    timestamp; raises ValueError."""
    text = value.strip()
    try:
        return (now or time.time()) - parse_duration(text)
    except ValueError:
        pass
    if not _RFC3339_UTC.match(text):
        raise ValueError("a duration like 10m or an RFC 3339 UTC timestamp")
    return parse_docker_time(text)


class LogReader:
    """One ``GET /containers/{id}/logs`` response; iterate :meth:`lines`, then :meth:`close`.

    Raises AgentError (not_found, unavailable...) when opening or while reading.
    """

    def __init__(self, docker_service, container, follow=False, tail="all", since=None):
        self.tty = bool((container.attrs.get("Config") or {}).get("Tty"))
        params = {"stdout": 1, "stderr": 1, "follow": int(follow), "tail": tail}
        if since:
            params["since"] = f"{since:.9f}"
        # a follow stream may stay quiet for hours: no read timeout (as docker-py's
        # _disable_socket_timeout does for its own streams)
        timeout = (CONNECT_TIMEOUT, None if follow else READ_TIMEOUT)
        self._response = None
        self._response = docker_service.open_stream(f"/containers/{container.id}/logs", params, timeout,
                                                    f"logs of {container.name}")

    def close(self):
        """Close the connection (also unblocks a reader waiting in another greenlet)."""
        response, self._response = self._response, None
        if response is not None:
            response.close()

    def frames(self):
        """Yield ``(stream_name, payload_bytes)`` as they arrive."""
        with translate("log stream"):
            if self.tty:
                for chunk in self._chunks():
                    yield "stdout", chunk
                return
            yield from self._demux()

    def _chunks(self):
        response = self._response
        if response is None:
            return
        http = getattr(getattr(response, "raw", None), "_fp", None)     # http.client.HTTPResponse
        if getattr(http, "chunked", False) and http.chunk_left is None and hasattr(http.fp, "read1"):
            yield from _dechunk(http.fp)
            return
        yield from response.iter_content(chunk_size=None)

    def _demux(self):
        buffer = bytearray()
        for chunk in self._chunks():
            buffer += chunk
            offset = 0
            while len(buffer) - offset >= HEADER.size:
                kind, length = HEADER.unpack_from(buffer, offset)
                end = offset + HEADER.size + length
                if end > len(buffer):
                    break
                yield STREAMS.get(kind, "stdout"), bytes(buffer[offset + HEADER.size:end])
                offset = end
            del buffer[:offset]

    def runs(self):
        """Yield ``(stream_name, block)``: complete lines of one stream, each ending in a newline,
        in the engine's order; the same lines as :meth:`lines` (a last unterminated line gets a
        newline) with one object per run of frames that arrived together, not one per line
        (issue 19: streaming at the engine's speed)."""
        partial = {"stdout": bytearray(), "stderr": bytearray()}
        for group in self._frame_groups():
            current, parts = None, []
            for stream, payload in group:
                if stream != current:
                    if parts:
                        yield _block(current, parts)
                    current, parts = stream, []
                pending = partial[stream]
                if pending or not payload.endswith(b"\n"):     # a line split across frames
                    parts.extend(_complete(pending, payload))
                else:
                    parts.append(payload)
            if parts:
                yield _block(current, parts)
        for stream, pending in partial.items():
            if pending:
                yield _block(stream, [bytes(pending) + b"\n"])

    def _frame_groups(self):
        """Lists of ``(stream_name, payload)``: the frames complete in each chunk read."""
        with translate("log stream"):
            if self.tty:
                for chunk in self._chunks():
                    yield [("stdout", chunk)]
                return
            buffer, unpack, size = bytearray(), HEADER.unpack_from, HEADER.size
            for chunk in self._chunks():
                buffer += chunk
                offset, end, group = 0, len(buffer), []
                while end - offset >= size:
                    kind, length = unpack(buffer, offset)
                    stop = offset + size + length
                    if stop > end:
                        break
                    group.append((STREAMS.get(kind, "stdout"), bytes(buffer[offset + size:stop])))
                    offset = stop
                del buffer[:offset]
                if group:
                    yield group

    def lines(self):
        """Yield ``(stream_name, line_bytes)``: complete lines without their newline, long
        lines cut at MAX_LINE_BYTES, a last unterminated line at the end of the stream."""
        partial = {"stdout": bytearray(), "stderr": bytearray()}
        for stream, payload in self.frames():
            pending = partial[stream]
            pending += payload
            start = 0
            while True:
                newline = pending.find(b"\n", start)
                if newline < 0:
                    break
                yield from _cut(stream, pending[start:newline])
                start = newline + 1
            del pending[:start]
            if len(pending) >= MAX_LINE_BYTES:
                yield from _cut(stream, pending)
                pending.clear()
        for stream, pending in partial.items():
            if pending:
                yield from _cut(stream, pending)


def _dechunk(fp, size=READ_BYTES):
    """The body of a chunked HTTP response (RFC 9112 7.1) read from ``fp`` in large reads: what
    the engine sent together comes out as one piece. The engine writes one chunk per log frame,
    and urllib3's per-chunk reads cost several times the frame's own handling (issue 19).
    Raises AgentError(unavailable) on a malformed chunk header."""
    buffer = bytearray()
    while True:
        data = fp.read1(size)
        if not data:
            return      # the engine closed the connection (a follow stream of a stopped container)
        buffer += data
        pieces, pos, end = [], 0, len(buffer)
        while True:
            eol = buffer.find(b"\r\n", pos)
            if eol < 0:
                if end - pos > MAX_CHUNK_LINE:
                    raise AgentError("unavailable", "log stream: malformed chunk header")
                break
            length = _chunk_length(buffer[pos:eol])
            if length == 0:
                if pieces:
                    yield b"".join(pieces)
                return
            stop = eol + 2 + length
            if stop + 2 > end:
                break
            pieces.append(buffer[eol + 2:stop])
            pos = stop + 2
        del buffer[:pos]
        if pieces:
            yield b"".join(pieces)


def _chunk_length(line):
    """The size of a chunk-size line (hex digits, optional extensions); AgentError otherwise."""
    match = _CHUNK_SIZE.fullmatch(line)
    length = int(match.group(1), 16) if match else -1
    if not 0 <= length <= MAX_CHUNK_BYTES:
        raise AgentError("unavailable", "log stream: malformed chunk header")
    return length


def _complete(pending, payload):
    """Complete lines (with their newlines) out of ``pending`` + ``payload``; the rest stays in
    ``pending`` unless it reached MAX_LINE_BYTES (then it is a line of its own, as in lines())."""
    pending += payload
    out = []
    last = pending.rfind(b"\n")
    if last >= 0:
        out.append(bytes(pending[:last + 1]))
        del pending[:last + 1]
    if len(pending) >= MAX_LINE_BYTES:
        out.append(bytes(pending) + b"\n")
        pending.clear()
    return out


def _cut(stream, line):
    """Pieces of at most MAX_LINE_BYTES, cut at UTF-8 character boundaries."""
    line = bytes(line)
    if line.endswith(b"\r"):
        line = line[:-1]
    for piece in _pieces(line):
        yield stream, piece


def _pieces(line):
    while len(line) > MAX_LINE_BYTES:
        cut = MAX_LINE_BYTES
        while cut > 0 and (line[cut] & 0xC0) == 0x80:
            cut -= 1
        cut = cut or MAX_LINE_BYTES
        yield line[:cut]
        line = line[cut:]
    yield line


def _block(stream, parts):
    """(stream, bytes) of complete lines from ``parts`` (each ending in a newline): one ``\r``
    before each newline dropped and lines longer than MAX_LINE_BYTES cut, as lines() does."""
    data = b"".join(parts) if len(parts) > 1 else parts[0]
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    if len(data) > MAX_LINE_BYTES and any(len(line) > MAX_LINE_BYTES for line in data.split(b"\n")):
        data = b"".join(piece + b"\n" for line in data.split(b"\n")[:-1] for piece in _pieces(line))
    return stream, data


def decode(line):
    return line.decode("utf-8", errors="replace")


def read_tail(docker, container, lines, since=None):
    """The last ``lines`` non-empty log lines of ``container`` (stdout and stderr in the
    engine's order), oldest first, fitted into one frame: ``{logs, container, truncated}``."""
    reader = LogReader(docker, container, follow=False, tail=lines, since=since)
    kept = collections.deque(maxlen=lines)
    try:
        for _stream, line in reader.lines():
            if line.strip():
                kept.append(decode(line))
    finally:
        reader.close()
    logs, truncated = fit(list(kept), FETCH_BUDGET)
    return {"logs": logs, "container": container.name, "truncated": truncated}


def fit(lines, budget):
    """Drop the oldest lines until their JSON encoding fits ``budget`` bytes."""
    total, keep = 0, len(lines)
    for index in range(len(lines) - 1, -1, -1):
        total += len(json.dumps(lines[index])) + 1
        if total > budget:
            break
        keep = index
    else:
        return lines, False
    return lines[keep:], True


def fetch_service_logs(docker, service_uid, lines=100, since=None):
    """service.logs.fetch: logs of the active container, else of the legacy
    ``pulseup-app-<uid>``. Raises not_found when neither exists."""
    container = docker.active_container(service_uid) or docker.legacy_container(service_uid)
    if container is None:
        raise AgentError("not_found", f"service {service_uid} has no container")
    return read_tail(docker, container, lines, since)


def fetch_database_logs(docker, service_uid, lines=100):
    """database.logs.fetch: logs of ``pulseup-db-<uid>``; raises not_found."""
    container = docker.find_container(f"pulseup-db-{service_uid}")
    if container is None:
        raise AgentError("not_found", f"database {service_uid} has no container")
    docker.require_managed(container)
    return read_tail(docker, container, lines)
