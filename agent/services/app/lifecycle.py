"""Service lifecycle (docs/commands.md, "Lifecycle"): start, stop, restart and status of a service's containers.

``service.delete`` lives in :mod:`agent.services.app.delete`. Status changes made here are
reported as ``update_service_status`` events and recorded in the DockerService, so the
events watcher does not repeat them; containers the agent stops itself are marked expected.
"""

import time

import gevent
import gevent.pool

from agent.errors import AgentError
from agent.services.docker import (
    COMMIT_SHA, VERSION, health_of, labels_of, parse_docker_time, state_of,
    status_of, translate)
from agent.values import rfc3339

STOP_GRACE = 30          # seconds between SIGTERM and SIGKILL (docs/commands.md, "Lifecycle")
POLL_INTERVAL = 0.5
DEFAULT_WAIT = 120.0
# A container without a healthcheck counts as started once it has stayed up this long:
# one that crashes at boot is briefly "running" and must not be reported started.
STABLE_SECONDS = 2.0


class Lifecycle:
    """Lifecycle actions on one DockerService; ``emit(event, data)`` publishes
    events and ``check()`` raises when the calling operation is cancelled or past its
    deadline. Every method raises AgentError."""

    def __init__(self, docker, emit, check=None, remaining=None, stop_grace=STOP_GRACE,
                 poll=POLL_INTERVAL):
        self.docker = docker
        self.emit = emit
        self.check = check or (lambda: None)
        self.remaining = remaining or (lambda: None)
        self.stop_grace = stop_grace
        self.poll = poll

    def status_event(self, service_uid, status, error=None, message=None):
        data = {"service_uid": service_uid, "status": status, "timestamp": rfc3339()}
        if error:
            data["error"] = error
        if message:
            data["message"] = message
        self.docker.record_status(service_uid, status)
        self.emit("update_service_status", data)

    # -- start / restart --------------------------------------------------------------

    def start(self, service_uid):
        """Start the service containers and wait until they run (and are healthy).
        Raises not_found (nothing to start), health_check_failed, cancelled..."""
        containers = self._targets(service_uid)
        return self._run_and_wait(service_uid, containers, self._start_one, "Service started")

    def restart(self, service_uid):
        """Restart the service containers and wait as for :meth:`start`."""
        containers = self._targets(service_uid)
        self.status_event(service_uid, "restarting")
        return self._run_and_wait(service_uid, containers, self._restart_one, "Service restarted")

    def _targets(self, service_uid):
        containers = self.docker.service_containers(service_uid)
        if not containers:
            raise AgentError("not_found", f"service {service_uid} has no containers")
        return containers

    def _run_and_wait(self, service_uid, containers, action, message):
        try:
            for container in containers:
                self.check()
                action(container)
            self._wait_ready(containers)
        except AgentError as exc:
            if exc.code not in ("cancelled", "deadline_exceeded"):
                self.status_event(service_uid, "failed", error=exc.message)
            raise
        self.status_event(service_uid, "running")
        names = [c.name for c in containers]
        return {"service_uid": service_uid, "container": _primary(containers).name,
                "containers": names, "message": message}

    def _start_one(self, container):
        self.docker.clear_expected(container.id)
        with translate(f"start {container.name}"):
            if state_of(container) == "paused":
                container.unpause()
            elif state_of(container) != "running":
                container.start()

    def _restart_one(self, container):
        # its die event is ours; the start event that follows clears the mark
        self.docker.mark_expected(container.id)
        with translate(f"restart {container.name}"):
            if state_of(container) == "paused":
                container.unpause()
            container.restart(timeout=self.stop_grace)

    def _wait_ready(self, containers):
        waiting = list(containers)
        budget = self.remaining()
        deadline = time.monotonic() + (DEFAULT_WAIT if budget is None else budget)
        while waiting:
            self.check()
            waiting = [c for c in waiting if not self._ready(c)]
            if waiting and time.monotonic() >= deadline:
                raise AgentError("deadline_exceeded",
                                 f"{waiting[0].name} not ready in time (state {state_of(waiting[0])})")
            if waiting:
                gevent.sleep(self.poll)

    def _ready(self, container):
        with translate(f"inspect {container.name}"):
            container.reload()
        state, health = state_of(container), health_of(container)
        if state in ("exited", "dead"):
            code = (container.attrs.get("State") or {}).get("ExitCode")
            raise AgentError("health_check_failed", f"{container.name} exited with code {code}")
        if health == "unhealthy":
            raise AgentError("health_check_failed", f"{container.name} is unhealthy")
        if state != "running":
            return False
        if health == "healthy":
            return True
        return health == "none" and self._up_for(container) >= STABLE_SECONDS

    @staticmethod
    def _up_for(container):
        started = parse_docker_time((container.attrs.get("State") or {}).get("StartedAt"))
        return 0.0 if started is None else time.time() - started

    # -- stop -------------------------------------------------------------------------

    def stop(self, service_uid):
        """Stop every running container labelled with the service (stale versions too).
        Already stopped or gone is fine; any other failure raises internal/unavailable
        with ``stopped_containers`` and ``errors`` in the error's details."""
        running = [c for c in self.docker.find_service_containers(service_uid)
                   if state_of(c) in ("running", "restarting", "paused")]
        for container in running:  # before anything is reported: late events stay quiet
            self.docker.mark_expected(container.id)
        self.status_event(service_uid, "stopping")
        stopped, errors = [], []
        pool = gevent.pool.Pool(8)
        for container in running:
            pool.spawn(self._stop_one, container, stopped, errors)
        pool.join()
        result = {"service_uid": service_uid, "stopped_containers": sorted(stopped)}
        if errors:
            code = "unavailable" if any(e.code == "unavailable" for e in errors) else "internal"
            messages = [e.message for e in errors]
            self.status_event(service_uid, "failed", error="; ".join(messages))
            raise AgentError(code, f"stopping {service_uid} failed: {messages[0]}",
                             **result, errors=messages)
        self.status_event(service_uid, "stopped")
        result["message"] = f"Stopped {len(stopped)} container(s)" if stopped else "Service already stopped"
        return result

    def _stop_one(self, container, stopped, errors):
        try:
            with translate(f"stop {container.name}"):
                container.stop(timeout=self.stop_grace)
        except AgentError as exc:
            if exc.code != "not_found":  # removed meanwhile: nothing left to stop
                errors.append(exc)
                return
        stopped.append(container.name)

    # -- status -----------------------------------------------------------------------

    def status(self, service_uid):
        """service.status.get: the status (docs/commands.md, "Statuses") of the active (else database) container."""
        containers = self.docker.find_service_containers(service_uid)
        legacy = self.docker.legacy_container(service_uid)
        if legacy is not None and all(c.id != legacy.id for c in containers):
            containers.append(legacy)
        main = (self.docker.active_container(service_uid, containers)
                or next((c for c in containers if c.name == f"pulseup-db-{service_uid}"), None))
        reply = {"service_uid": service_uid, "status": "stopped", "health": "none",
                 "containers": [_describe(c) for c in containers]}
        if main is not None:
            reply.update(status=status_of(main), health=health_of(main), deployment=_deployment(main))
        return reply


def _primary(containers):
    """The app container when there is one (service_containers lists it last)."""
    return containers[-1]


def _describe(container):
    labels = labels_of(container)
    image = (container.attrs.get("Config") or {}).get("Image", "")
    entry = {"name": container.name, "id": container.id, "status": status_of(container),
             "health": health_of(container), "image": image}
    if labels.get(VERSION, "").isdigit():
        entry["version"] = int(labels[VERSION])
    if labels.get(COMMIT_SHA):
        entry["commit_sha"] = labels[COMMIT_SHA]
    return entry


def _deployment(container):
    state = container.attrs.get("State") or {}
    started = parse_docker_time(state.get("StartedAt"))
    return {"name": container.name, "status": status_of(container), "port": primary_port(container),
            "updated_at": rfc3339(started) if started else "", "error": _exit_reason(state)}


def _exit_reason(state):
    if state.get("Error"):
        return state["Error"]
    if state.get("Status") in ("exited", "dead") and state.get("ExitCode"):
        return f"exited with code {state['ExitCode']}"
    if state.get("OOMKilled"):
        return "killed: out of memory"
    return ""


def primary_port(container):
    """Lowest published host port, else lowest exposed internal port, else 0."""
    ports = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
    published = sorted(int(b["HostPort"]) for bindings in ports.values() if bindings
                       for b in bindings if b.get("HostPort", "").isdigit())
    if published:
        return published[0]
    exposed = list(ports) or list((container.attrs.get("Config") or {}).get("ExposedPorts") or {})
    internal = sorted(int(p.split("/")[0]) for p in exposed if p.split("/")[0].isdigit())
    return internal[0] if internal else 0
