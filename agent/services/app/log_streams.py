"""Service log streams (docs/commands.md, "Logs and stats"): ``container_log`` events.

One stream per service; a new start replaces the old one. Each stream is two greenlets
owned by ``services.spawn``: an attach loop that follows the service's *active* container
(re-attaching after a restart or a swap) and a ticker that flushes batched lines every
250 ms and ends the stream on its limits. Lines are batched into events of one output
stream each (at most 64 KiB of text); a full batch is flushed by the reader itself, so
memory stays bounded whatever the log rate (docs/design.md, "Habits": batch log lines into frames).
"""

import time

import gevent
import gevent.event
import gevent.lock

from agent import log
from agent.errors import AgentError
from agent.services.docker import parse_docker_time
from agent.values import rfc3339
from agent.services.app.logs import MAX_LINE_BYTES, LogReader, decode

FLUSH_INTERVAL = 0.25
EVENT_BYTES = MAX_LINE_BYTES          # text per container_log event
DISCONNECTED_LIMIT = 60.0             # end after this long without a connection
ACTIVE_POLL = 1.0                     # while the service has no active container
RETRY_MAX = 30.0

_log = log.get("logstream")


class LogStream:
    def __init__(self, services, service_uid, container, tail, since, max_duration,
                 flush_interval=FLUSH_INTERVAL):
        self.services = services
        self.service_uid = service_uid
        self.container = container
        self.start_time = rfc3339()
        self._tail, self._since = tail, since
        self._deadline = time.monotonic() + max_duration
        self._flush_interval = flush_interval
        self._pending, self._pending_bytes = [], 0
        self._flush_lock = gevent.lock.Semaphore()
        self._wake = gevent.event.Event()
        self._done = gevent.event.Event()
        self._reason = None
        self._reader = None
        self._attach = None
        self._ticker = None
        self._disconnected_since = None

    # -- control (from other greenlets) ---------------------------------------------

    def start(self):
        self._info(f"Log streaming started for {self.container.name}")
        self._attach = self.services.spawn(f"logstream-attach-{self.service_uid}", self._attach_loop)
        self._ticker = self.services.spawn(f"logstream-{self.service_uid}", self._tick_loop)

    def end(self, reason, timeout=10.0):
        """Ask the stream to end with ``reason`` (an info event) and wait until it has."""
        if self._reason is None:
            self._reason = reason
        self._wake.set()
        self._done.wait(timeout)

    @property
    def running(self):
        return not self._done.is_set()

    # -- the ticker: flushes and limits ---------------------------------------------

    def _tick_loop(self):
        try:
            while not self._wake.wait(self._flush_interval):
                self.flush()
                reason = self._limit_reached()
                if reason:
                    self._reason = self._reason or reason
                    break
        finally:
            self._finish()

    def _limit_reached(self):
        if time.monotonic() >= self._deadline:
            return "Log stream ended: maximum duration reached"
        if self._connected():
            self._disconnected_since = None
        elif self._disconnected_since is None:
            self._disconnected_since = time.monotonic()
        elif time.monotonic() - self._disconnected_since >= DISCONNECTED_LIMIT:
            return "Log stream ended: no connection to the control plane"
        return None

    def _connected(self):
        status = self.services.status() if self.services.status else None
        connection = (status or {}).get("connection") or {}
        return connection.get("state", "connected") == "connected"

    def _finish(self):
        if self._attach is not None:
            self._attach.kill(block=True, timeout=5)
        if self._attach is None or self._attach.dead:
            # closing under a greenlet still reading would be a reentrant call (the kill
            # above normally ends the read; urllib3 then drops the connection itself)
            self._close_reader()
        self.flush()
        self._info(self._reason or "Log streaming stopped")
        self._done.set()

    # -- the attach loop ------------------------------------------------------------

    def _attach_loop(self):
        delay = 1.0
        while True:
            try:
                self._follow(self.container)
                delay = 1.0
            except AgentError as exc:
                self._error(f"Log stream error: {exc.message}")
                gevent.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
            finally:
                self._close_reader()
            self.flush()
            self._wait_for_active()

    def _follow(self, container):
        self._reader = LogReader(self.services.docker, container, follow=True,
                                 tail=self._tail, since=self._since)
        for stream, block in self._reader.runs():
            self.add_block(stream, block)
        # end of stream: the container stopped; continue after what we have seen
        self._tail, self._since = "all", time.time()

    def _wait_for_active(self):
        docker = self.services.docker
        while True:
            try:
                active = docker.active_container(self.service_uid)
            except AgentError:
                active = None
            if active is not None and active.id != self.container.id:
                self._switch(active)
                return
            if active is not None and (active.attrs.get("State") or {}).get("Running"):
                return
            gevent.sleep(ACTIVE_POLL)

    def _switch(self, container):
        self.container = container
        # the new container's whole output (its candidate phase included): since its
        # creation, not its StartedAt, which the engine records after the process may
        # already have written its first lines (issue 18: they were lost at a swap)
        self._tail, self._since = "all", parse_docker_time(container.attrs.get("Created"))
        self._info(f"Log stream switched to {container.name}")

    def _close_reader(self):
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    # -- batching -------------------------------------------------------------------

    def add(self, stream, line):
        """Queue one line (bytes, no newline); flush at once when a full event is waiting."""
        self.add_block(stream, bytes(line) + b"\n")

    def add_block(self, stream, block):
        """Queue complete lines (bytes, each ending in a newline, none over MAX_LINE_BYTES)."""
        self._pending.append((stream, block))
        self._pending_bytes += len(block)
        if self._pending_bytes >= EVENT_BYTES:
            self.flush()

    def flush(self):
        with self._flush_lock:
            pending, self._pending, self._pending_bytes = self._pending, [], 0
            for stream, text in _events(pending):
                self._emit("log", text, stream=stream)

    def _emit(self, kind, message, stream=None):
        data = {"service_uid": self.service_uid, "message": message, "type": kind,
                "timestamp": int(time.time()), "container_name": self.container.name}
        if stream is not None:
            data["stream"] = stream
        self.services.events.emit("container_log", data)

    def _info(self, message):
        self._emit("info", message)

    def _error(self, message):
        _log.warning("service %s: %s", self.service_uid, message)
        self._emit("error", message)


def _events(pending):
    """``(stream, text)`` of container_log events from queued blocks: consecutive blocks of one
    stream joined, cut at line ends into texts of at most EVENT_BYTES (the lines of _batches,
    decoded once per event instead of once per line)."""
    for stream, data in _runs(pending):
        start, size = 0, len(data)
        while start < size:
            cut = data.rfind(b"\n", start, start + EVENT_BYTES + 1)
            if cut < start:         # no line end within reach: add_block's contract was broken
                cut = data.find(b"\n", start)
                cut = size if cut < 0 else cut
            yield stream, decode(data[start:cut])
            start = cut + 1


def _runs(pending):
    current, parts = None, []
    for stream, block in pending:
        if parts and stream != current:
            yield current, b"".join(parts)
            parts = []
        current = stream
        parts.append(block)
    if parts:
        yield current, b"".join(parts)


def _batches(pending):
    """Consecutive runs of one stream, each at most EVENT_BYTES of text."""
    batch, size, current = [], 0, None
    for stream, line in pending:
        if batch and (stream != current or size + len(line) + 1 > EVENT_BYTES):
            yield current, batch
            batch, size = [], 0
        batch.append(line)
        size += len(line) + 1
        current = stream
    if batch:
        yield current, batch


class LogStreams:
    """The service log streams of this worker, one per service uid."""

    def __init__(self, services, flush_interval=FLUSH_INTERVAL):
        self.services = services
        self.flush_interval = flush_interval
        self._streams = {}

    def start(self, service_uid, tail=10, since=None, max_duration=21600.0):
        """Follow the active container of ``service_uid``, replacing an existing stream.

        Raises not_found when the service has no active container, unavailable."""
        container = self.services.docker.active_container(service_uid)
        if container is None:
            raise AgentError("not_found", f"service {service_uid} has no active container")
        self.stop(service_uid, "Log stream replaced by a new request", missing_ok=True)
        stream = LogStream(self.services, service_uid, container, tail, since, max_duration,
                           self.flush_interval)
        self._streams[service_uid] = stream
        stream.start()
        return {"message": "Log streaming started", "service_uid": service_uid,
                "start_time": stream.start_time, "container": container.name}

    def stop(self, service_uid, reason="Log streaming stopped", missing_ok=False):
        """End the service's stream; raises not_found unless ``missing_ok``."""
        stream = self._streams.get(service_uid)
        if stream is None or not stream.running:
            self._streams.pop(service_uid, None)
            if missing_ok:
                return False
            raise AgentError("not_found", f"no active log stream for service {service_uid}")
        stream.end(reason)
        if self._streams.get(service_uid) is stream:
            del self._streams[service_uid]
        return True

    def active(self):
        """Uids with a running stream."""
        return sorted(uid for uid, stream in self._streams.items() if stream.running)

    def close(self):
        for uid in list(self._streams):
            self.stop(uid, "Log stream ended: agent stopping", missing_ok=True)
