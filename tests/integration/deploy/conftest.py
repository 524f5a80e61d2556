"""An agent with the deploy commands, run through the real dispatcher against the test dockerd
and the token git server."""
import os

import pytest

from tests.integration.harness.agentkit import InProcessAgent
from tests.integration.harness.deploykit import deploy_config, quick_deploys, service_leftovers


# lifecycle too: service.delete closes the loop and removes what the deploys made
DEPLOY_MODULES = ("agent.handlers.agent", "agent.handlers.lifecycle", "agent.handlers.deploy")


@pytest.fixture
def deploy_cfg(tmp_path, docker_host, git_server):
    return deploy_config(str(tmp_path), docker_host, git_server)


@pytest.fixture
def deploy_agent(deploy_cfg, docker_client, app_base_image, test_network):
    os.makedirs(deploy_cfg.state_dir, exist_ok=True)
    with quick_deploys(InProcessAgent(deploy_cfg, DEPLOY_MODULES)) as agent:
        yield agent


@pytest.fixture
def cleanup_service(docker_client):
    """cleanup_service(uid): after the test, remove what the uid left on the engine
    (tests/integration/harness/deploykit.py: containers, compose networks and volumes, images)."""
    yield from service_leftovers(docker_client)
