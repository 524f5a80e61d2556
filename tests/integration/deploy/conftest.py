"""An agent with the deploy commands, run through the real dispatcher against the test dockerd
and the token git server."""
import os

import docker.errors
import pytest

from agent import config
from agent.services.deploy import gate, swap
from tests.integration.harness.agentkit import InProcessAgent


# lifecycle too: service.delete closes the loop and removes what the deploys made
DEPLOY_MODULES = ("agent.handlers.agent", "agent.handlers.lifecycle", "agent.handlers.deploy")


@pytest.fixture
def deploy_cfg(tmp_path, docker_host, git_server):
    return config.defaults().replace(
        state_dir=str(tmp_path / "state"), cert_dir=str(tmp_path / "certs"), docker_host=docker_host,
        apps_dir=str(tmp_path / "apps"), deployment_dir=str(tmp_path / "deployments"),
        deployment_log_dir=str(tmp_path / "logs"), allow_insecure_transport=True,
        pulseup_git_allowed_hosts=(f"127.0.0.1:{git_server.port}",))


@pytest.fixture
def deploy_agent(deploy_cfg, docker_client, app_base_image, test_network):
    os.makedirs(deploy_cfg.state_dir, exist_ok=True)
    agent = InProcessAgent(deploy_cfg, DEPLOY_MODULES)
    # probe faster than the 1 s of production so the suite stays short
    # and stop with a short grace: busybox httpd as PID 1 ignores SIGTERM
    interval, gate.ReadinessGate.probe_interval = gate.ReadinessGate.probe_interval, 0.25
    grace, swap.Swap.stop_grace = swap.Swap.stop_grace, 1
    try:
        yield agent
    finally:
        gate.ReadinessGate.probe_interval = interval
        swap.Swap.stop_grace = grace
        agent.close()


@pytest.fixture
def cleanup_service(docker_client):
    """Remove every container labelled with the uids a test used, and their images."""
    uids = []
    yield uids.append
    for uid in uids:
        for container in docker_client.containers.list(all=True, filters={"label": f"pulseup.service_uid={uid}"}):
            container.remove(force=True)
        for image in docker_client.images.list(name=f"pulseup-app-{uid}"):
            for tag in image.tags:
                docker_client.images.remove(tag, force=True)
        try:
            docker_client.images.remove(f"pulseup-app:{uid}", force=True)
        except docker.errors.ImageNotFound:
            pass
