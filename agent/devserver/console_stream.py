"""Server-sent event streams of the console (docs/devserver.md, "Web console").

Each stream is a generator run by the connection's greenlet; it ends (and unsubscribes)
when the browser goes away and the next write fails. Agent frames are sent as JSON in one
`data:` line under a fixed event name, never as an agent-chosen event name: the browser
parses them and shows them as text only.
"""

import json
import time

import gevent.queue

from agent.devserver.console_jobs import call
from agent.devserver.http import queued_or_keepalive

STATS_INTERVAL_S = 2.0
CONTAINERS_EVERY = 5          # stats ticks between two container samples
KEEPALIVE_S = 15.0
REPLAY_FRAMES = 200
DEPLOY_EVENTS = ("deployment_log_chunk", "update_deployment_status")


def sse(name, data):
    return ("event: %s\ndata: %s\n\n" % (name, json.dumps(data, default=str))).encode()


def frame_event(name, frame):
    return sse("frame", {"name": str(name), "frame": frame})


def _frame_name(frame):
    return frame.get("event") if frame.get("type") == "event" else frame.get("type")


def _shown(name):
    """Events and connection changes; replies to calls (the console's own stats polls among
    them) and keep-alive pings are not the agent's event stream."""
    return name not in ("response", "ping")


def agent_stream(server, uid, stats=True):
    """Live host stats (`server.stats.live` every 2 s), container samples
    (`monitoring.container.metrics`) and every frame the agent sends."""
    queue = server.hub.subscribe(uid)
    try:
        yield b": subscribed\n\n"
        if not stats:
            frames = [f for f in server.received_frames(uid) if _shown(_frame_name(f))]
            for frame in frames[-REPLAY_FRAMES:]:
                yield frame_event(_frame_name(frame), frame)
        next_poll, tick = time.monotonic(), 0
        while True:
            if stats and time.monotonic() >= next_poll:
                yield _stats(server, uid, tick)
                tick += 1
                next_poll = time.monotonic() + STATS_INTERVAL_S
            wait = max(0.0, next_poll - time.monotonic()) if stats else KEEPALIVE_S
            try:
                name, frame = queue.get(timeout=wait)
            except gevent.queue.Empty:
                if not stats:
                    yield b": keep-alive\n\n"
                continue
            if _shown(name):
                yield frame_event(name, frame)
    finally:
        server.hub.unsubscribe(uid, queue)


def _stats(server, uid, tick):
    chunks = b""
    if tick % CONTAINERS_EVERY == 0:
        reply = call(server, uid, "monitoring.container.metrics", {}, 10)
        if reply.get("success") and isinstance(reply.get("data"), dict):
            chunks += sse("containers", containers_summary(reply["data"]))
    reply = call(server, uid, "server.stats.live", {}, 10)
    if reply.get("success"):
        return chunks + sse("stats", reply.get("data"))
    return chunks + sse("stats_error", {"error": str(reply.get("error"))})


def containers_summary(metrics):
    """Per container: name, status, CPU %, memory % (from ContainerMetrics)."""
    rows = []
    for item in metrics.values():
        if not isinstance(item, dict):
            continue
        cpu = item.get("cpu") if isinstance(item.get("cpu"), dict) else {}
        mem = item.get("memory") if isinstance(item.get("memory"), dict) else {}
        rows.append({"name": str(item.get("container_name")), "status": str(item.get("status")),
                     "cpu": cpu.get("usage"), "memory": mem.get("percent")})
    return {"containers": rows}


def deployment_stream(server, jobs, uid, deployment_uid):
    """The deployment's log chunks and status updates: what was received so far, then live."""
    queue = server.hub.subscribe(uid)
    try:
        yield b": subscribed\n\n"
        seen = set()
        for frame in server.received_frames(uid):
            if _is_deployment_frame(frame, _frame_name(frame), deployment_uid):
                seen.add(id(frame))
                yield frame_event(_frame_name(frame), frame)
        job = jobs.find(uid, deployment_uid)
        if job is not None:
            yield frame_event("console_job", {"type": "console_job", "data": job.as_dict()})
        for item in queued_or_keepalive(queue, KEEPALIVE_S):
            if item is None:
                yield b": keep-alive\n\n"
                continue
            name, frame = item
            if id(frame) not in seen and _is_deployment_frame(frame, name, deployment_uid):
                yield frame_event(name, frame)
    finally:
        server.hub.unsubscribe(uid, queue)


def _is_deployment_frame(frame, name, deployment_uid):
    data = frame.get("data")
    if not isinstance(data, dict) or data.get("deployment_uid") != deployment_uid:
        return False
    return name in DEPLOY_EVENTS or name == "console_job"


class LogFollowers:
    """Counts the browsers following a service's container logs: the agent's stream (one
    per service) is started by the first and stopped when the last one leaves."""

    def __init__(self, server, jobs):
        self.server, self.jobs = server, jobs
        self._count = {}

    def stream(self, uid, service_uid):
        key = (uid, service_uid)
        queue = self.server.hub.subscribe(uid)
        self._count[key] = self._count.get(key, 0) + 1
        try:
            yield b": subscribed\n\n"
            reply = call(self.server, uid, "service.logs.stream.start",
                         {"service_uid": service_uid, "tail": 50}, 30)
            if not reply.get("success"):
                yield sse("logs_error", {"error": str(reply.get("error"))})
            yield from self._forward(queue, service_uid)
        finally:
            self.server.hub.unsubscribe(uid, queue)
            self._release(key)

    @staticmethod
    def _forward(queue, service_uid):
        for item in queued_or_keepalive(queue, KEEPALIVE_S):
            if item is None:
                yield b": keep-alive\n\n"
                continue
            name, frame = item
            data = frame.get("data")
            if name == "container_log" and isinstance(data, dict) \
                    and data.get("service_uid") == service_uid:
                yield sse("log", {"type": str(data.get("type")), "stream": str(data.get("stream")),
                                  "message": str(data.get("message"))})

    def _release(self, key):
        self._count[key] -= 1
        if self._count[key] <= 0:
            del self._count[key]
            self.jobs.background(call, self.server, key[0], "service.logs.stream.stop",
                                 {"service_uid": key[1]}, 30)
