"""The container event watcher (docs/protocol.md, "Outbound events"): Docker events -> service status.

It follows ``GET /events`` filtered on ``pulseup.managed=true`` containers and reports
``update_service_status`` (running / stopped / failed) for a service's active or database
container, and ``container_stopped`` for any managed container. A swap (new container
running, old one stopped) stays ``running``: the old container is no longer the active one.
Lost connections to the engine are retried with equal-jitter backoff (docs/protocol.md, "Connection"), resuming
from the last event's time so nothing in between is missed; duplicates are suppressed.
"""

import random
import time

import gevent

from agent import log
from agent.errors import AgentError
from agent.services.docker import (
    COMPONENT, DATABASE_TYPE, MANAGED, SERVICE_UID, DEPLOYMENT_UID, translate)
from agent.values import rfc3339

STOP_ACTIONS = ("die", "stop", "destroy", "oom", "health_status: unhealthy")
RUNNING_ACTIONS = ("start", "restart", "health_status: healthy")
# `kill` is not acted on by itself: every kill that stops a container is followed by `die`
# (which carries the exit code), and a kill with another signal may not stop it at all.

_log = log.get("docker.events")


def start(services, **kwargs):
    """Spawn the watcher as an owned background greenlet; returns the watcher."""
    watcher = EventsWatcher(services, **kwargs)
    services.spawn("docker-events", watcher.run)
    return watcher


class EventsWatcher:
    def __init__(self, services, backoff_start=1.0, backoff_max=30.0):
        self.services = services
        self.backoff_start, self.backoff_max = backoff_start, backoff_max
        self._since = None
        self._stream = None
        self._stopping = False
        self._stopped_reported = set()   # container ids reported since their last start
        self.connected = False

    @property
    def docker(self):
        return self.services.docker

    def run(self):
        delay = self.backoff_start
        while not self._stopping:
            try:
                self._consume()
                delay = self.backoff_start
            except AgentError as exc:
                _log.warning("docker events: %s; retrying", exc.message)
            self.connected = False
            if self._stopping:
                break
            gevent.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, self.backoff_max)

    def stop(self):
        self._stopping = True
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def close(self):
        self.stop()

    def _consume(self):
        filters = {"type": "container", "label": [f"{MANAGED}=true"]}
        with translate("events"):
            since = self._since or time.time()
            self._stream = self.docker.api.events(since=since, filters=filters, decode=True)
            self.connected = True
            try:
                for event in self._stream:
                    self.handle(event)
            finally:
                stream, self._stream = self._stream, None
                if stream is not None:
                    stream.close()

    # -- one event ------------------------------------------------------------------

    def handle(self, event):
        """Act on one decoded Docker event (public for tests)."""
        if event.get("Type", "container") != "container":
            return
        actor = event.get("Actor") or {}
        attrs = actor.get("Attributes") or {}
        action = event.get("Action") or event.get("status") or ""
        container_id = actor.get("ID") or event.get("id") or ""
        self._since = max(self._since or 0, event.get("time") or 0) or None
        if attrs.get(MANAGED) != "true":
            return
        if action in ("start", "restart"):  # a new run: its stop is news again
            self._stopped_reported.discard(container_id)
            self.docker.clear_expected(container_id, _event_time(event))
        if action in STOP_ACTIONS:
            self._container_stopped(container_id, action, attrs, event)
        status = _status_for(action)
        if status is not None:
            self._service_status(container_id, status, attrs)

    def _container_stopped(self, container_id, action, attrs, event):
        if container_id in self._stopped_reported:
            return
        self._stopped_reported.add(container_id)
        data = {
            "container_id": container_id, "container_name": attrs.get("name", ""),
            "timestamp": rfc3339(_event_time(event)), "service_uid": attrs.get(SERVICE_UID, ""),
            "deployment_uid": attrs.get(DEPLOYMENT_UID, ""), "action": action,
            "expected": self.docker.is_expected(container_id),
        }
        if "exitCode" in attrs:
            data["exit_code"] = str(attrs["exitCode"])
        self.services.events.emit("container_stopped", data)

    def _service_status(self, container_id, status, attrs):
        service_uid = attrs.get(SERVICE_UID)
        if not service_uid or attrs.get(COMPONENT) == "caddy" or self.docker.is_expected(container_id):
            return
        try:
            if not self._is_primary(service_uid, container_id, attrs, status):
                return
        except AgentError as exc:  # engine gone between the event and our look-up
            _log.warning("docker events: cannot resolve service %s: %s", service_uid, exc.message)
            return
        error = None
        if status == "stopped" and attrs.get("exitCode") not in (None, "0"):
            error = f"container exited with code {attrs['exitCode']}"
        elif status == "failed":
            error = "container health check reports unhealthy"
        # the look-up above yields to other greenlets: a stop the agent began meanwhile
        # (service.stop, a swap) has marked the container by now
        if self.docker.is_expected(container_id):
            return
        if self.docker.record_status(service_uid, status):
            data = {"service_uid": service_uid, "status": status, "timestamp": rfc3339()}
            if error:
                data["error"] = error
            self.services.events.emit("update_service_status", data)

    def _is_primary(self, service_uid, container_id, attrs, status):
        """Is this the service's active (or database) container, as far as ``status`` goes?"""
        if DATABASE_TYPE in attrs or attrs.get("name") == f"pulseup-db-{service_uid}":
            return True
        active = self.docker.active_container(service_uid)
        if active is not None:
            return active.id == container_id and (status != "stopped" or not _running(active))
        if status != "stopped":
            return False
        apps = self.docker.app_containers(service_uid)
        return bool(apps) and apps[0].id == container_id


def _running(container):
    return bool((container.attrs.get("State") or {}).get("Running"))


def _status_for(action):
    if action in RUNNING_ACTIONS:
        return "running"
    if action in ("die", "stop", "oom"):
        return "stopped"
    if action == "health_status: unhealthy":
        return "failed"
    return None


def _event_time(event):
    nano = event.get("timeNano")
    return nano / 1e9 if nano else event.get("time")
