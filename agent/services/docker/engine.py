"""The Docker engine as the agent sees it: one client, PulseUp's containers.

Everything that talks to Docker goes through :class:`DockerService` (its client and the
helpers of this package). Containers are found by their ``pulseup.*`` labels or by the exact
fixed names of docs/commands.md, "Docker names and labels", never by substring; the agent
only touches containers labelled ``pulseup.managed=true``.
"""

import threading
import time

from agent.errors import AgentError
from agent.services.docker import exec as _exec
from agent.services.docker.errors import api_error, inspect_or_none, map_error, translate
from agent.services.docker.labels import (
    _HEX_ID, COMPONENT, COMPOSE_PROJECT, CONTAINER_REF, EXPECTED_TTL, MANAGED, NETWORK, SERVICE_UID,
    is_app_candidate, is_database, is_managed, labels_of, state_of, version_of)
from agent.services.docker.networks import ensure_network

class DockerService:
    """The agent's Docker client and the label rules of docs/commands.md, "Docker names and labels"

    Every public method raises AgentError: ``unavailable`` when the engine cannot be
    reached, ``not_found``/``conflict``/``permission_denied``/``internal`` per Docker's answer.
    """

    def __init__(self, cfg, client_factory=None):
        self.cfg = cfg
        self._factory = client_factory or self._default_factory
        self._client = None
        self._lock = threading.Lock()
        self._expected = {}
        self._last_status = {}

    def _default_factory(self):
        import docker

        if self.cfg.docker_host:
            return docker.DockerClient(base_url=self.cfg.docker_host, version="auto")
        return docker.from_env(version="auto")

    @property
    def client(self):
        """The docker.DockerClient, created on first use (the version probe needs the engine)."""
        with self._lock:
            if self._client is None:
                with translate("connect"):
                    self._client = self._factory()
            return self._client

    @property
    def api(self):
        """The low-level docker.APIClient of :attr:`client`."""
        return self.client.api

    def close(self):
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- finding containers ---------------------------------------------------------

    def get_container(self, ref, managed=True):
        """The container with this exact id (12-64 hex) or exact name.

        Raises invalid_argument for a malformed ref, not_found, and permission_denied when
        ``managed`` and the container lacks ``pulseup.managed=true``.
        """
        if not isinstance(ref, str) or not CONTAINER_REF.match(ref):
            raise AgentError("invalid_argument", "container_id: must be 12-64 lowercase hex "
                             "characters or a container name", field="container_id")
        with translate(f"container {ref}"):
            container = self.client.containers.get(ref)
        exact = container.name == ref or (_HEX_ID.match(ref) and container.id.startswith(ref))
        if not exact:  # Docker also resolves id prefixes; names must match exactly
            raise AgentError("not_found", f"container {ref}: no such container")
        if managed:
            self.require_managed(container)
        return container

    def find_container(self, name):
        """The container named exactly ``name``, or None. Raises unavailable/internal."""
        try:
            with translate(f"container {name}"):
                container = self.client.containers.get(name)
        except AgentError as exc:
            if exc.code == "not_found":
                return None
            raise
        return container if container.name == name else None

    @staticmethod
    def require_managed(container):
        """Raise permission_denied unless the container carries ``pulseup.managed=true``."""
        if not is_managed(container):
            raise AgentError("permission_denied",
                             f"container {container.name} is not managed by PulseUp")

    def list_containers(self, labels=(), all=True):
        """Containers carrying every ``key=value`` of ``labels`` (exact matches)."""
        with translate("list containers"):
            return self.client.containers.list(
                all=all, filters={"label": list(labels)}, ignore_removed=True)

    def managed_containers(self, all=True):
        """Every container labelled ``pulseup.managed=true``."""
        return self.list_containers([f"{MANAGED}=true"], all=all)

    def find_service_containers(self, service_uid):
        """Managed containers labelled with this service uid, highest version first."""
        found = self.list_containers([f"{MANAGED}=true", f"{SERVICE_UID}={service_uid}"])
        return sorted(found, key=lambda c: (version_of(c), c.attrs.get("Created", "")), reverse=True)

    def app_containers(self, service_uid, containers=None):
        """The service's app containers (no database, proxy or candidate), highest version first."""
        if containers is None:
            containers = self.find_service_containers(service_uid)
        return [c for c in containers if is_app_candidate(c) and not is_database(c, service_uid)]

    def active_container(self, service_uid, containers=None):
        """docs/commands.md, "Docker names and labels": the highest-version non-candidate container that is not
        exited/dead, or None."""
        for container in self.app_containers(service_uid, containers):
            if state_of(container) not in ("exited", "dead"):
                return container
        return None

    def database_container(self, service_uid):
        """``pulseup-db-<uid>`` when it exists and is managed, else None."""
        container = self.find_container(f"pulseup-db-{service_uid}")
        return container if container is not None and is_managed(container) else None

    def legacy_container(self, service_uid):
        """``pulseup-app-<uid>`` (recognised for status, logs and delete), or None."""
        return self.find_container(f"pulseup-app-{service_uid}")

    def service_containers(self, service_uid):
        """docs/commands.md, "Lifecycle": database container, compose containers, and the active app
        container (or the highest-version non-candidate one)."""
        containers = self.find_service_containers(service_uid)
        chosen = [c for c in containers if is_database(c, service_uid)]
        chosen += [c for c in containers if COMPOSE_PROJECT in labels_of(c) and c not in chosen]
        apps = [c for c in self.app_containers(service_uid, containers) if c not in chosen]
        primary = self.active_container(service_uid, apps) or (apps[0] if apps else None)
        if primary is not None:
            chosen.append(primary)
        return chosen

    def proxy_container(self):
        """The managed proxy container (``pulseup.component=caddy``), or None."""
        found = self.list_containers([f"{MANAGED}=true", f"{COMPONENT}=caddy"])
        return found[0] if found else None

    # -- expected stops (swaps, service.stop): the events watcher stays quiet -------

    def mark_expected(self, container_id):
        """Record that the agent itself is about to stop or remove this container."""
        self._expected[container_id] = time.time()

    def is_expected(self, container_id):
        stamp = self._expected.get(container_id)
        if stamp is not None and time.time() - stamp > EXPECTED_TTL:
            self._expected.pop(container_id, None)
            return False
        return stamp is not None

    def clear_expected(self, container_id, started_at=None):
        """Forget the mark; with ``started_at`` (epoch seconds of a start event) only when
        that start came after the mark (a late event of an earlier run changes nothing)."""
        stamp = self._expected.get(container_id)
        if stamp is not None and (started_at is None or started_at > stamp):
            del self._expected[container_id]

    def record_status(self, service_uid, status):
        """Remember the status last reported for a service; True when it changed (the
        events watcher suppresses repeats, docs/protocol.md, "Outbound events")."""
        changed = self._last_status.get(service_uid) != status
        self._last_status[service_uid] = status
        return changed

    # -- networks and exec ----------------------------------------------------------

    def ensure_network(self, name=NETWORK):
        """The bridge network ``name``, created when missing (exact name match)."""
        return ensure_network(self.client, name)

    def open_stream(self, path, params, timeout, what):
        """A streaming ``GET`` of an engine API path (the raw response, read by the caller:
        container logs in the engine's own framing). Raises the translated AgentError."""
        import requests

        api = self.api
        with translate(what):
            response = api.get(f"{api.base_url}/v{api.api_version}{path}", params=params, stream=True,
                               timeout=timeout)
            try:
                response.raise_for_status()
            except requests.HTTPError as exc:
                response.close()
                raise map_error(api_error(exc), what) from exc
        return response

    def inspect_container(self, name):
        """Container inspect dict, or None when absent; raises AgentError otherwise."""
        return inspect_or_none(self.api, name)

    def path_exists(self, container, path):
        """Whether ``path`` exists in the container (running or not); raises AgentError."""
        return _exec.path_exists(self.api, container, path)

    def run(self, container, script, timeout=60.0):
        """Run ``sh -c script`` in the container; (exit_code, stdout, stderr) as text.
        For short commands; long ones stream through :class:`~agent.services.docker.exec.ExecStream`."""
        return _exec.run(self, container, script, timeout)
