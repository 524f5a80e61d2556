"""Host port choice for database containers (docs/commands.md, "Databases" and "Deployments", ports).

A port is taken when any container publishes it (running containers show it in their
``Ports``, stopped ones keep it in ``HostConfig.PortBindings`` and will claim it again on
start) or when a bind on the address it would be published on fails.
"""

import errno
import socket

from agent.errors import AgentError
from agent.services.docker import translate

MAX_PORT = 65535


def published_ports(adapter):
    """{host port: container name} for every port any container publishes or will publish."""
    taken = {}
    with translate("list containers"):
        for summary in adapter.api.containers(all=True):
            name = (summary.get("Names") or ["?"])[0].lstrip("/")
            for port in summary.get("Ports") or []:
                if port.get("PublicPort"):
                    taken.setdefault(int(port["PublicPort"]), name)
            if summary.get("State") != "running":
                for port in _bound_ports(adapter, summary["Id"]):
                    taken.setdefault(port, name)
    return taken


def _bound_ports(adapter, container_id):
    info = adapter.inspect_container(container_id) or {}
    bindings = (info.get("HostConfig") or {}).get("PortBindings") or {}
    for entries in bindings.values():
        for entry in entries or []:
            if str(entry.get("HostPort") or "").isdigit():
                yield int(entry["HostPort"])


def host_port_free(address, port):
    """Whether a TCP bind on (address, port) succeeds right now (docs/commands.md, "Deployments")."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as docker-proxy (Go) uses it: TIME_WAIT leftovers do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def check_requested(adapter, address, port):
    """Raise AgentError(conflict) when a requested ``port`` is taken."""
    owner = published_ports(adapter).get(port)
    if owner is not None:
        raise AgentError("conflict", f"port {port} is already in use by container '{owner}'",
                         field="port")
    if not host_port_free(address, port):
        raise AgentError("conflict", f"port {port} is in use on the host", field="port")


def candidates(adapter, address, start, skip=()):
    """Free ports from ``start`` upward: not published by a container, bindable, not in ``skip``."""
    taken = published_ports(adapter)
    for port in range(start, MAX_PORT + 1):
        if port in taken or port in skip:
            continue
        if host_port_free(address, port):
            yield port
    raise AgentError("conflict", f"no free host port from {start} upward")
