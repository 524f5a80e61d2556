"""The Docker engine adapter: the one client, error translation, exec stream, events
watcher and network helper (docs/design.md, "Layers").

Only this package talks to docker-py and catches its exceptions; everything else uses
:class:`DockerService` and the names below. The ``service.*`` commands built on it live in
``agent.services.app``.
"""

from agent.services.docker.errors import image_present, inspect_or_none, map_error, translate
from agent.services.docker.labels import (
    CANDIDATE_SUFFIX, COMMIT_SHA, COMPONENT, COMPOSE_PROJECT, CONTAINER_REF, DATABASE_TYPE, DEPLOYMENT_UID,
    MANAGED, NETWORK, SERVICE_UID, VERSION, health_of, is_app_candidate, is_database, is_managed, labels_of,
    parse_docker_time, service_status, state_of, status_of, version_of)
from agent.services.docker.networks import ensure_network
from agent.services.docker.engine import DockerService  # noqa: E402 (uses the modules above)

__all__ = [
    "CANDIDATE_SUFFIX", "COMMIT_SHA", "COMPONENT", "COMPOSE_PROJECT", "CONTAINER_REF", "DATABASE_TYPE",
    "DEPLOYMENT_UID", "DockerService", "MANAGED", "NETWORK", "SERVICE_UID", "VERSION", "ensure_network",
    "health_of", "image_present", "inspect_or_none", "is_app_candidate", "is_database", "is_managed",
    "labels_of", "map_error", "parse_docker_time", "service_status", "state_of", "status_of", "translate",
    "version_of"]
