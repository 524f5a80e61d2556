"""Real services for the integration tests (see tests/integration/conftest.py for fixtures)."""
from .caddy import CaddyServer
from .databases import MariadbServer, PostgresServer, RedisServer
from .dockerd import DockerDaemon
from .gitserver import GitServer
from .process import ServiceError, free_port, wait_until
from .require import in_ci, require_service, unavailable

__all__ = [
    "CaddyServer", "DockerDaemon", "GitServer", "MariadbServer", "PostgresServer",
    "RedisServer", "ServiceError", "free_port", "in_ci", "require_service", "unavailable",
    "wait_until",
]
