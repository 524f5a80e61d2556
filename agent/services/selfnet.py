"""A containerised agent attaches its own container to ``pulseup-net`` (docs/commands.md, "Deployments").

The readiness gate and monitoring dial app containers at their ``pulseup-net`` address; an
agent running in a container on another network cannot count on reaching them (engines
isolate bridge networks from each other), so at start-up it connects its own container to
``pulseup-net``, creating the network when missing. An agent on the host does nothing.

Which container: the engine bind-mounts ``<data-root>/containers/<id>/{hostname,hosts,
resolv.conf}`` into every container, so the 64-hex id shows in ``/proc/self/mountinfo``
(proc(5), "mountinfo"); the id must name a container of the engine the agent talks to
(a nested engine's container, or a look-alike path on the host, is ignored). The
attachment is retried until it succeeds, because the engine may come up after the agent.
"""

import re

import gevent

from agent import log
from agent.errors import AgentError
from agent.services.docker import NETWORK, translate

_log = log.get("docker")
MOUNTINFO = "/proc/self/mountinfo"
_ID_IN_MOUNT = re.compile(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)(?:\s|$)")
RETRY_INTERVAL = 10.0


def own_container_id(mountinfo=MOUNTINFO):
    """The 64-hex id of the container this process runs in, or None (not in one, or unreadable)."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as handle:
            text = handle.read(1 << 20)
    except OSError:
        return None
    found = {match.group(1) for match in _ID_IN_MOUNT.finditer(text)}
    return found.pop() if len(found) == 1 else None


def attach(service, container_id, network=NETWORK):
    """Connect ``container_id`` to ``network`` unless it is attached already.

    ``service`` is the DockerService. Returns "attached", "already" or "foreign" (the engine
    knows no such container).
    Raises AgentError (unavailable and the other docker codes)."""
    try:
        with translate(f"container {container_id[:12]}"):
            container = service.client.containers.get(container_id)
    except AgentError as exc:
        if exc.code == "not_found":
            return "foreign"
        raise
    if network in ((container.attrs.get("NetworkSettings") or {}).get("Networks") or {}):
        return "already"
    net = service.ensure_network(network)
    try:
        with translate(f"connect to {network}"):
            net.connect(container)
    except AgentError as exc:
        if "already exists" not in exc.message:    # attached concurrently: fine
            raise
    return "attached"


def join_when_containerised(get_docker, mountinfo=MOUNTINFO, interval=RETRY_INTERVAL):
    """Body of the start-up greenlet: attach until done; nothing outside a container.
    ``get_docker()`` returns the DockerService (only asked for inside a container)."""
    container_id = own_container_id(mountinfo)
    if container_id is None:
        return None
    while True:
        try:
            outcome = attach(get_docker(), container_id)
        except AgentError as exc:
            _log.warning("cannot attach this agent's container to %s yet: %s", NETWORK, exc.message)
            gevent.sleep(interval)
            continue
        if outcome == "foreign":
            _log.info("running in container %s of another engine: not joining %s", container_id[:12], NETWORK)
        else:
            _log.info("this agent's container %s is on %s (%s)", container_id[:12], NETWORK, outcome)
        return outcome


def start(services):
    """Spawn the attachment greenlet through ``services.spawn`` (its one owner)."""
    return services.spawn("join-pulseup-net", join_when_containerised, lambda: services.docker)
