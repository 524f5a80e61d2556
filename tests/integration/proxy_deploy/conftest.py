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
from harness.deploykit import deploy_config, quick_deploys, service_leftovers  # noqa: E402
from pdsupport import Agent  # noqa: E402

from agent.services.caddy.container import NAME as PROXY_NAME  # noqa: E402


@pytest.fixture(scope="module")
def pd_agent(docker_host, docker_client, git_server, caddy_image, app_base_image, test_network):
    # A short state dir: the admin socket path must fit in sun_path (unix(7)).
    root = tempfile.mkdtemp(prefix="pd-", dir="/tmp")
    cfg = deploy_config(root, docker_host, git_server, caddy_image=caddy_image,
                        caddy_http_port=free_port(), caddy_https_port=free_port(),
                        caddy_tls_issuer="internal")
    os.makedirs(cfg.state_dir, mode=0o700)
    try:
        agent = Agent(cfg)
        agent.services.proxy.tls_check_delays = (0.5, 1.0, 2.0, 4.0)
        with quick_deploys(agent):
            yield agent
    finally:
        _remove_container(docker_client, PROXY_NAME)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def track(docker_client):
    """track(uid): remove the uid's containers, compose networks and volumes and images after
    the test (tests/integration/harness/deploykit.py)."""
    yield from service_leftovers(docker_client)


def _remove_container(client, name):
    try:
        client.containers.get(name).remove(force=True)
    except docker.errors.NotFound:
        pass
