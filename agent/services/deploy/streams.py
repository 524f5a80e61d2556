"""Deployment log streams: ``deployment_log_chunk`` events from byte offsets (docs/commands.md, "Logs and stats").

One greenlet per stream (owned by ``services.spawn``) tails ``<deployment_uid>_build.log`` and
``_deploy.log`` every interval. Each event carries at most 64 KiB, cut at a line boundary where
possible, never in the middle of a UTF-8 sequence. Offsets advance only once an event was
handed over while the connection is up, so a reconnect (or a new start with the offsets the
server last saw) resumes without gaps. A stream ends by itself: after the deployment finished
and two intervals passed without data, after ``idle_timeout`` without data, or silently after
60 s without a connection.
"""

import os
import time

import gevent
import gevent.event

from agent import log
from agent.errors import AgentError
from agent.services.deploy.logs import LOG_TYPES, log_path, read_steps, steps_path

CHUNK_BYTES = 64 * 1024
DISCONNECTED_LIMIT = 60.0

_log = log.get("deploylogs")


def cut_chunk(data, more_follows):
    """The part of ``data`` to send now: up to the last newline when the chunk is full and more
    follows, and never ending inside a UTF-8 sequence. Returns bytes (maybe empty)."""
    if more_follows and b"\n" in data:
        data = data[:data.rindex(b"\n") + 1]
    for back in range(1, min(4, len(data)) + 1):      # an incomplete trailing sequence is held back
        byte = data[-back]
        if byte & 0xC0 == 0x80:                        # continuation byte: keep looking for the lead
            continue
        if byte & 0x80 and back < _sequence_length(byte):
            return data[:-back]
        break
    return data


def _sequence_length(lead):
    if lead & 0xE0 == 0xC0:
        return 2
    if lead & 0xF0 == 0xE0:
        return 3
    return 4 if lead & 0xF8 == 0xF0 else 1


class DeployLogStream:
    def __init__(self, owner, deployment_uid, service_uid, offsets, include_steps, interval, idle_timeout):
        self.owner = owner
        self.services = owner.services
        self.log_dir = owner.cfg.deployment_log_dir
        self.deployment_uid, self.service_uid = deployment_uid, service_uid
        self.offsets = {kind: int(offsets.get(kind) or 0) for kind in LOG_TYPES}
        self.include_steps = include_steps
        self.interval, self.idle_timeout = interval, idle_timeout
        self.sequence = 0
        self._steps_stamp = None
        self._last_data = time.monotonic()
        self._terminal_quiet = 0
        self._disconnected_since = None
        self._stop = gevent.event.Event()
        self._done = gevent.event.Event()
        self._greenlet = None

    @property
    def running(self):
        return not self._done.is_set()

    def start(self):
        self._greenlet = self.services.spawn(f"deploylogs-{self.deployment_uid}", self._loop)

    def stop(self, timeout=10.0):
        """Flush what is left, send the ``final`` chunk, wait for the greenlet to end."""
        self._stop.set()
        self._done.wait(timeout)

    def _loop(self):
        dropped = False
        try:
            self.flush()
            while not self._stop.wait(self.interval):
                sent = self.flush()
                dropped = self._disconnected_too_long()
                if dropped or self._should_end(sent):
                    break
        finally:
            if not dropped:
                self.flush()
                self._emit({"final": True, "offsets": dict(self.offsets)})
            self._done.set()

    def _should_end(self, sent):
        now = time.monotonic()
        if sent:
            self._last_data, self._terminal_quiet = now, 0
            return False
        if not self.owner.is_running(self.deployment_uid):
            self._terminal_quiet += 1
            if self._terminal_quiet >= 2:
                return True
        return now - self._last_data >= self.idle_timeout

    def _connected(self):
        status = self.services.status() if self.services.status else None
        return ((status or {}).get("connection") or {}).get("state", "connected") == "connected"

    def _disconnected_too_long(self):
        if self._connected():
            self._disconnected_since = None
            return False
        self._disconnected_since = self._disconnected_since or time.monotonic()
        return time.monotonic() - self._disconnected_since >= DISCONNECTED_LIMIT

    # -- reading and sending ------------------------------------------------------------

    def flush(self):
        """Send everything new; True when data (or steps) went out. Nothing while disconnected."""
        if not self._connected():
            return False
        sent = False
        for kind in LOG_TYPES:
            while self._send_next(kind):
                sent = True
        return self._send_steps() or sent

    def _send_next(self, kind):
        path = log_path(self.log_dir, self.deployment_uid, kind)
        try:
            size = os.path.getsize(path)
        except OSError:
            size = 0
        offset, reset = self.offsets[kind], False
        if size < offset:                       # truncated or replaced: start again (docs/commands.md, "Logs and stats")
            offset, reset = 0, True
            self.offsets[kind] = 0
        if size == offset:
            return False
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read(min(CHUNK_BYTES, size - offset))
        data = cut_chunk(data, offset + len(data) < size)
        if not data:
            return False
        chunk = {"start_offset": offset, "end_offset": offset + len(data), "log_type": kind,
                 "chunk": data.decode("utf-8", "replace"), "size": len(data)}
        if reset:
            chunk["reset"] = True
        self._attach_steps(chunk)
        self._emit(chunk)
        self.offsets[kind] = offset + len(data)
        return True

    def _steps_changed(self):
        if not self.include_steps:
            return False
        try:
            stat = os.stat(steps_path(self.log_dir, self.deployment_uid))
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            return False
        return stamp != self._steps_stamp and stamp

    def _attach_steps(self, chunk):
        stamp = self._steps_changed()
        if stamp:
            chunk["steps"] = read_steps(self.log_dir, self.deployment_uid)
            self._steps_stamp = stamp

    def _send_steps(self):
        chunk = {}
        self._attach_steps(chunk)
        if not chunk:
            return False
        self._emit(chunk)
        return True

    def _emit(self, fields):
        self.sequence += 1
        data = {"deployment_uid": self.deployment_uid, "service_uid": self.service_uid,
                "timestamp": int(time.time()), "sequence": self.sequence, **fields}
        data.setdefault("start_offset", self.offsets["build"] + self.offsets["deploy"])
        data.setdefault("end_offset", data["start_offset"])
        self.services.events.emit("deployment_log_chunk", data)


class DeployLogStreams:
    """The running deployment log streams, one per deployment uid."""

    def __init__(self, owner):
        self.owner = owner
        self._streams = {}

    def start(self, deployment_uid, service_uid, offsets, include_steps=False, interval=1.0, idle_timeout=900.0):
        """Start (or replace) the stream of ``deployment_uid``."""
        old = self._streams.pop(deployment_uid, None)
        if old is not None and old.running:
            old.stop()
        stream = DeployLogStream(self.owner, deployment_uid, service_uid, offsets, include_steps, interval,
                                 idle_timeout)
        self._streams[deployment_uid] = stream
        stream.start()
        return {"message": "Deployment log streaming started", "deployment_uid": deployment_uid,
                "offsets": dict(stream.offsets)}

    def stop(self, deployment_uid):
        """Flush and end a stream; raises not_found when none runs."""
        stream = self._streams.pop(deployment_uid, None)
        if stream is None or not stream.running:
            raise AgentError("not_found", "no active stream for deployment")
        stream.stop()
        return {"message": "stream stopped", "deployment_uid": deployment_uid}

    def close(self):
        for uid in list(self._streams):
            stream = self._streams.pop(uid)
            if stream.running:
                stream.stop(timeout=2.0)
