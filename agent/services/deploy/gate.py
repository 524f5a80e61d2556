"""The readiness gate of a new app container (docs/commands.md, "Deployments").

Probed every second until ``health_timeout_seconds`` (and never past the call's deadline):
Docker health when the image declares a HEALTHCHECK, else a TCP connect (plus an HTTP GET of
``health_check_path``) to the container's address on ``pulseup-net``, else 10 seconds of
uninterrupted running. In every case the container must still be running, never started
again since the gate began (restart count and start time unchanged: a restart policy or an
engine restart), when the gate passes; an exited or dead container fails at once.
"""

import http.client
import socket
import time

import gevent

from agent.errors import AgentError
from agent.services.docker import NETWORK, health_of, state_of, translate

PROBE_INTERVAL = 1.0
CONNECT_TIMEOUT = 2.0
HTTP_TIMEOUT = 5.0
LOG_TAIL = 100


def has_healthcheck(container):
    test = ((container.attrs.get("Config") or {}).get("Healthcheck") or {}).get("Test") or []
    return bool(test) and test[0] != "NONE"


def network_address(container, network=NETWORK):
    networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    return (networks.get(network) or {}).get("IPAddress") or None


def restart_count(container):
    return container.attrs.get("RestartCount", 0)


def start_marker(container):
    """What changes whenever the container starts again: its restart count (the restart
    policy after an exit) and its start time (also a restart by an engine that came back,
    which does not count as a restart)."""
    return restart_count(container), (container.attrs.get("State") or {}).get("StartedAt")


class ReadinessGate:
    """``wait(ctx)`` returns when the container is ready; raises health_check_failed,
    cancelled, deadline_exceeded, unavailable."""

    stable_seconds = 10.0       # class attributes so tests can shrink them
    probe_interval = PROBE_INTERVAL

    def __init__(self, container, port=None, path=None, timeout=120.0, say=None):
        self.container = container
        self.port = port
        self.path = path
        self.timeout = timeout
        self.say = say or (lambda text, level="INFO": None)
        self._running_since = None
        self.last_error = None

    def wait(self, ctx=None):
        deadline = time.monotonic() + self.timeout
        self._reload()
        started = start_marker(self.container)
        mode = self.mode()
        self.say(f"readiness gate: {mode}, up to {self.timeout:g}s")
        while True:
            if ctx is not None:
                ctx.check()
            self._reload()
            self._fail_if_dead()
            if start_marker(self.container) != started:
                self._fail(f"container {self.container.name} restarted during the readiness gate")
            if self._probe(mode) and state_of(self.container) == "running":
                self.say(f"container {self.container.name} is ready")
                return
            if time.monotonic() >= deadline:
                reason = f": {self.last_error}" if self.last_error else ""
                self._fail(f"container {self.container.name} not ready after {self.timeout:g}s{reason}")
            gevent.sleep(self.probe_interval)

    def mode(self):
        if has_healthcheck(self.container):
            return "docker health"
        if self.port:
            return f"http GET {self.path} on port {self.port}" if self.path else f"tcp port {self.port}"
        return f"running for {self.stable_seconds:g}s"

    def _reload(self):
        with translate(f"container {self.container.name}"):
            self.container.reload()

    def _probe(self, mode):
        if mode == "docker health":
            health = health_of(self.container)
            if health == "unhealthy":
                self._fail(f"container {self.container.name} reported unhealthy")
            return health == "healthy"
        if self.port:
            return self._probe_port()
        if state_of(self.container) != "running":
            self._running_since = None
            return False
        self._running_since = self._running_since or time.monotonic()
        return time.monotonic() - self._running_since >= self.stable_seconds

    def _probe_port(self):
        address = network_address(self.container)
        if not address:
            self.last_error = f"no address on {NETWORK}"
            return False
        try:
            with socket.create_connection((address, self.port), timeout=CONNECT_TIMEOUT):
                pass
        except OSError as exc:
            self.last_error = f"tcp {address}:{self.port}: {exc.strerror or exc}"
            return False
        return self._probe_http(address) if self.path else True

    def _probe_http(self, address):
        conn = http.client.HTTPConnection(address, self.port, timeout=HTTP_TIMEOUT)
        try:
            conn.request("GET", self.path, headers={"User-Agent": "pulseup-agent readiness"})
            status = conn.getresponse().status
        except (OSError, http.client.HTTPException) as exc:
            self.last_error = f"GET {self.path}: {exc}"
            return False
        finally:
            conn.close()
        if 200 <= status < 400:
            return True
        self.last_error = f"GET {self.path} answered {status}"
        return False

    def _fail_if_dead(self):
        state = state_of(self.container)
        if state not in ("exited", "dead"):
            return
        code = (self.container.attrs.get("State") or {}).get("ExitCode")
        self._fail(f"container {self.container.name} {state} with exit code {code}")

    def _fail(self, message):
        self.say(message, "ERROR")
        self._dump_logs()
        raise AgentError("health_check_failed", message)

    def _dump_logs(self):
        try:
            with translate("container logs"):
                text = self.container.logs(tail=LOG_TAIL).decode("utf-8", "replace")
        except AgentError:
            return
        if text.strip():
            self.say(f"last {LOG_TAIL} log lines of {self.container.name}:\n{text.rstrip()}", "WARN")
