"""Fixtures of the proxy + deploy end-to-end tests (issue 9 "Done when").

One agent per test module: deploy, domain and lifecycle commands through the real dispatcher,
against the private test dockerd, the token git server and the agent's own Caddy container
(tls internal, published on free ports). Every test registers the service uids it uses; their
containers, compose networks and images are removed after it.
"""
import os
import shutil
import sys
import tempfile

import docker.errors
import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from harness import free_port  # noqa: E402
from pdsupport import Agent  # noqa: E402

from agent import config  # noqa: E402
from agent.services.caddy.container import NAME as PROXY_NAME  # noqa: E402
from agent.services.deploy import gate, swap  # noqa: E402


@pytest.fixture(scope="module")
def pd_agent(docker_host, docker_client, git_server, caddy_image, app_base_image, test_network):
    # A short state dir: the admin socket path must fit in sun_path (unix(7)).
    root = tempfile.mkdtemp(prefix="pd-", dir="/tmp")
    cfg = config.defaults().replace(
        state_dir=os.path.join(root, "state"), cert_dir=os.path.join(root, "certs"), docker_host=docker_host,
        apps_dir=os.path.join(root, "apps"), deployment_dir=os.path.join(root, "deployments"),
        deployment_log_dir=os.path.join(root, "logs"), allow_insecure_transport=True,
        pulseup_git_allowed_hosts=(f"127.0.0.1:{git_server.port}",), caddy_image=caddy_image,
        caddy_http_port=free_port(), caddy_https_port=free_port(), caddy_tls_issuer="internal")
    os.makedirs(cfg.state_dir, mode=0o700)
    agent = Agent(cfg)
    agent.services.proxy.tls_check_delays = (0.5, 1.0, 2.0, 4.0)
    # probe faster than production's 1 s, and stop with a short grace: busybox httpd as
    # PID 1 ignores SIGTERM (the swap's 30 s grace would only slow the suite down)
    interval, gate.ReadinessGate.probe_interval = gate.ReadinessGate.probe_interval, 0.25
    grace, swap.Swap.stop_grace = swap.Swap.stop_grace, 1
    try:
        yield agent
    finally:
        gate.ReadinessGate.probe_interval = interval
        swap.Swap.stop_grace = grace
        agent.close()
        _remove_container(docker_client, PROXY_NAME)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def track(docker_client):
    """track(uid): remove the uid's containers, compose networks and images after the test."""
    uids = []
    yield uids.append
    for uid in uids:
        for container in docker_client.containers.list(all=True, filters={"label": f"pulseup.service_uid={uid}"}):
            container.remove(force=True)
        for network in docker_client.networks.list(filters={"label": f"com.docker.compose.project=pulseup-{uid}"}):
            network.remove()
        for image in docker_client.images.list(name=f"pulseup-app-{uid}"):
            for tag in image.tags:
                docker_client.images.remove(tag, force=True)
        try:
            docker_client.images.remove(f"pulseup-app:{uid}", force=True)
        except docker.errors.ImageNotFound:
            pass


def _remove_container(client, name):
    try:
        client.containers.get(name).remove(force=True)
    except docker.errors.NotFound:
        pass
