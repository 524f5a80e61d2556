"""The database container of a service, as backup and restore see it."""

from dataclasses import dataclass, field

from agent import log
from agent.errors import AgentError
from agent.services.database import engines

CONTAINER_PREFIX = "pulseup-db-"
VOLUME_PREFIX = "pulseup-db-vol-"
_log = log.get("database")


def container_name(service_uid):
    return CONTAINER_PREFIX + service_uid


def volume_name(service_uid):
    return VOLUME_PREFIX + service_uid


def container_env(info):
    """The container's environment as a dict."""
    env = {}
    for item in (info.get("Config") or {}).get("Env") or []:
        key, _, value = item.partition("=")
        env[key] = value
    return env


@dataclass
class DatabaseTarget:
    service_uid: str
    name: str
    engine: engines.Engine
    info: dict = field(repr=False)

    @property
    def labels(self):
        return (self.info.get("Config") or {}).get("Labels") or {}

    @property
    def image(self):
        return (self.info.get("Config") or {}).get("Image", "")

    @property
    def running(self):
        return bool((self.info.get("State") or {}).get("Running"))

    @property
    def database(self):
        """Default database: the ``pulseup.database_name`` label, else the engine's env var."""
        label = self.labels.get("pulseup.database_name")
        if label:
            return label
        if self.engine.name == "redis":
            return "0"
        return container_env(self.info).get(self.engine.database_env) or self.engine.default_database

    def secrets(self):
        """Values of the container's password variables (redacted from stderr tails)."""
        return [v for k, v in container_env(self.info).items() if "PASSWORD" in k.upper() and v]

    def server_version(self, adapter):
        """The version the server reports itself (docs/commands.md, "Databases"), "" if it will not say."""
        try:
            code, out, err = adapter.run(self.name, self.engine.version, timeout=30)
        except AgentError as exc:
            _log.warning("version query of %s failed: %s", self.name, exc.message)
            return ""
        if code != 0:
            _log.warning("version query of %s exited with %s", self.name, code)
            return ""
        return engines.parse_version(self.engine.name, out)


def find(adapter, service_uid, require_running=True):
    """The DatabaseTarget of ``service_uid``.

    Raises AgentError: not_found (no container), permission_denied (not managed),
    failed_precondition (no database label, or not running when required).
    """
    name = container_name(service_uid)
    info = adapter.inspect_container(name)
    if info is None:
        raise AgentError("not_found", f"database container {name} does not exist")
    labels = (info.get("Config") or {}).get("Labels") or {}
    if labels.get("pulseup.managed") != "true":
        raise AgentError("permission_denied", f"container {name} is not managed by PulseUp")
    try:
        engine = engines.get(labels.get("pulseup.database_type"))
    except ValueError:
        raise AgentError("failed_precondition",
                         f"container {name} has no valid pulseup.database_type label") from None
    target = DatabaseTarget(service_uid, name, engine, info)
    if require_running and not target.running:
        raise AgentError("failed_precondition", f"database container {name} is not running")
    return target
