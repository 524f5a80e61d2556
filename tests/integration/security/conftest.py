"""Fixtures of the hostile-repository tests (issue 17): an in-process agent with the deploy
commands (tests/integration/harness/agentkit.py) against the private test dockerd and the
token git server, and a record of what runs on the engine before and after each test."""
import pytest

from agent.services.deploy import gate, swap
from tests.integration.security.secsupport import make_cfg, start_agent


@pytest.fixture(scope="module")
def sec_agent(tmp_path_factory, docker_host, docker_client, git_server, app_base_image, test_network):
    agent = start_agent(make_cfg(str(tmp_path_factory.mktemp("sec")), docker_host, git_server))
    # busybox as PID 1 ignores SIGTERM: a short grace keeps compose down quick
    interval, gate.ReadinessGate.probe_interval = gate.ReadinessGate.probe_interval, 0.25
    grace, swap.Swap.stop_grace = swap.Swap.stop_grace, 1
    try:
        yield agent
    finally:
        gate.ReadinessGate.probe_interval = interval
        swap.Swap.stop_grace = grace
        agent.close()


@pytest.fixture
def engine(docker_client):
    """Removes, after the test, what the uids it registers left on the engine (containers,
    compose networks and volumes, images)."""
    uids = []
    yield uids.append
    for uid in uids:
        project = {"label": f"com.docker.compose.project=pulseup-{uid}"}
        for container in docker_client.containers.list(all=True, filters=project):
            container.remove(force=True)
        for network in docker_client.networks.list(filters=project):
            network.remove()
        for volume in docker_client.volumes.list(filters=project):
            volume.remove(force=True)
        for image in docker_client.images.list(filters={"reference": f"pulseup-{uid}_*"}):
            docker_client.images.remove(image.id, force=True)
