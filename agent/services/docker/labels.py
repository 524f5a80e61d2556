"""PulseUp's names and labels on Docker objects, and reading a container's state
(docs/commands.md, "Docker names and labels" and "Statuses"). Pure functions: no engine call."""

import re
from datetime import datetime, timezone

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
