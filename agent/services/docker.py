"""The Docker engine as the agent sees it: one client, one error translation, PulseUp's labels.

Everything that talks to Docker goes through :class:`DockerService`. Docker's exceptions are
translated to :class:`AgentError` in exactly one place (:func:`translate`, after docker-py's
own ``create_api_error_from_http_exception``). Containers are found by their ``pulseup.*``
labels or by the exact fixed names of docs/commands.md, "Docker names and labels", never by substring; the agent only
touches containers labelled ``pulseup.managed=true``.
"""

import contextlib
import re
import threading
import time
from datetime import datetime, timezone

from agent import log
from agent.errors import AgentError
from agent.values import rfc3339  # noqa: F401 (the services import it from here)

NETWORK = "pulseup-net"
MANAGED = "pulseup.managed"
SERVICE_UID = "pulseup.service_uid"
DEPLOYMENT_UID = "pulseup.deployment_uid"
VERSION = "pulseup.lifecycle.version"
COMMIT_SHA = "pulseup.commit_sha"
COMPONENT = "pulseup.component"
DATABASE_TYPE = "pulseup.database_type"
COMPOSE_PROJECT = "com.docker.compose.project"
CANDIDATE_SUFFIX = "-candidate"

CONTAINER_REF = re.compile(r"^(?:[0-9a-f]{12,64}|[A-Za-z0-9][A-Za-z0-9_.-]{0,127})\Z")
_HEX_ID = re.compile(r"^[0-9a-f]{12,64}\Z")
EXPECTED_TTL = 600.0  # an expected stop is forgotten after 10 minutes

# docs/commands.md, "Statuses": Docker state -> service status
_STATUS = {"running": "running", "restarting": "restarting", "created": "pending",
           "paused": "stopped", "exited": "stopped", "dead": "failed", "removing": "stopping"}

_log = log.get("docker")


def service_status(state, health="none"):
    """The one mapping of docs/commands.md, "Statuses" (``running`` + ``unhealthy`` -> ``failed``)."""
    status = _STATUS.get(state, "failed")
    if status == "running" and health == "unhealthy":
        return "failed"
    return status


def parse_docker_time(text):
    """Epoch seconds from Docker's ``2024-01-02T03:04:05.123456789Z``; None for the zero time."""
    if not text or text.startswith("0001-"):
        return None
    stamp, _, frac = text.rstrip("Z").partition(".")
    frac = (frac.split("+")[0].split("-")[0] + "000000000")[:9]
    base = datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return base.timestamp() + int(frac) / 1e9


def map_error(exc, what="docker"):
    """The AgentError for a docker-py / requests exception (see module docstring)."""
    import docker.errors
    import requests.exceptions

    if isinstance(exc, docker.errors.NotFound):
        return AgentError("not_found", f"{what}: {exc.explanation or 'not found'}")
    if isinstance(exc, docker.errors.APIError):
        status, text = exc.status_code or 500, exc.explanation or str(exc)
        if status == 409:
            return AgentError("conflict", f"{what}: {text}")
        if status in (401, 403):
            return AgentError("permission_denied", f"{what}: {text}")
        if 400 <= status < 500:    # the engine refused the request as given
            return AgentError("invalid_argument", f"{what}: {text}")
        return AgentError("internal", f"internal error: {what}: {text}")
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                        ConnectionError, FileNotFoundError)) or _is_connect_failure(exc):
        return AgentError("unavailable", f"docker daemon unreachable: {exc}")
    return AgentError("internal", f"internal error: {what}: {exc}")


def _is_connect_failure(exc):
    # docker-py wraps a failed version probe in a bare DockerException (api/client.py).
    import docker.errors
    return isinstance(exc, docker.errors.DockerException) and "fetching server API version" in str(exc)


@contextlib.contextmanager
def translate(what="docker"):
    """Run a block of Docker calls; raise the matching AgentError for any Docker failure."""
    import docker.errors
    import requests.exceptions

    try:
        yield
    except AgentError:
        raise
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise map_error(exc, what) from exc


def ensure_network(client, name=NETWORK):
    """The bridge network ``name`` (a docker.DockerClient's), created when missing."""
    import docker.errors

    with translate(f"network {name}"):
        for attempt in range(2):
            # the names filter matches substrings: compare exactly
            for network in client.networks.list(names=[name]):
                if network.name == name:
                    return network
            try:
                return client.networks.create(name, driver="bridge", labels={MANAGED: "true"})
            except docker.errors.APIError:
                if attempt:  # not created concurrently by someone else: a real failure
                    raise


def image_present(api, image, what=None):
    """True when the engine has ``image`` (low-level ``api`` client); other failures raise
    the translated AgentError."""
    try:
        with translate(what or f"inspect image {image}"):
            api.inspect_image(image)
        return True
    except AgentError as exc:
        if exc.code == "not_found":
            return False
        raise


def inspect_or_none(api, name, what=None):
    """The container's inspect dict, or None when it does not exist; raises AgentError."""
    try:
        with translate(what or f"inspect container {name}"):
            return api.inspect_container(name)
    except AgentError as exc:
        if exc.code == "not_found":
            return None
        raise


def labels_of(container):
    return (container.attrs.get("Config") or {}).get("Labels") or {}


def is_managed(container):
    return labels_of(container).get(MANAGED) == "true"


def version_of(container):
    """The ``pulseup.lifecycle.version`` label as an int (0 when absent or malformed)."""
    try:
        return int(labels_of(container).get(VERSION, "0"))
    except ValueError:
        return 0


def state_of(container):
    return (container.attrs.get("State") or {}).get("Status", "dead")


def health_of(container):
    health = (container.attrs.get("State") or {}).get("Health") or {}
    return health.get("Status") or "none"


def status_of(container):
    return service_status(state_of(container), health_of(container))


def is_database(container, service_uid=None):
    uid = service_uid or labels_of(container).get(SERVICE_UID)
    return DATABASE_TYPE in labels_of(container) or container.name == f"pulseup-db-{uid}"


def is_app_candidate(container):
    """Would this container qualify as a service's active app container (ignoring state)?"""
    labels = labels_of(container)
    return (not container.name.endswith(CANDIDATE_SUFFIX) and not is_database(container)
            and labels.get(COMPONENT) != "caddy")


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

    def exec_stream(self, container, cmd, environment=None, user="", workdir=None):
        """Start ``cmd`` (an argv list) in a container; an :class:`ExecStream` of
        demultiplexed (stdout, stderr) chunks. Raises not_found, conflict (not running)."""
        with translate(f"exec in {container.name}"):
            exec_id = self.api.exec_create(container.id, cmd, stdout=True, stderr=True,
                                           environment=environment, user=user, workdir=workdir)["Id"]
            output = self.api.exec_start(exec_id, stream=True, demux=True)
        return ExecStream(self, exec_id, output)


class ExecStream:
    """Iterate ``(stdout_bytes_or_None, stderr_bytes_or_None)``; then :meth:`exit_code`.
    :meth:`close` ends the stream early (on cancel)."""

    def __init__(self, docker_service, exec_id, output):
        self._docker = docker_service
        self.exec_id = exec_id
        self._output = output

    def __iter__(self):
        with translate("exec stream"):
            yield from self._output

    def close(self):
        with contextlib.suppress(Exception):
            self._output.close()

    def exit_code(self):
        """The exec's exit code (None while it still runs)."""
        with translate("exec inspect"):
            return self._docker.api.exec_inspect(self.exec_id).get("ExitCode")
