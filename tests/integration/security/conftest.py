"""Fixtures of the hostile-repository tests (issue 17): an in-process agent with the deploy
commands (tests/integration/harness/agentkit.py) against the private test dockerd and the
token git server, and a record of what runs on the engine before and after each test."""
import pytest

from tests.integration.harness.deploykit import deploy_config, quick_deploys, service_leftovers
from tests.integration.security.secsupport import start_agent


@pytest.fixture(scope="module")
def sec_agent(tmp_path_factory, docker_host, docker_client, git_server, app_base_image, test_network):
    cfg = deploy_config(str(tmp_path_factory.mktemp("sec")), docker_host, git_server)
    with quick_deploys(start_agent(cfg)) as agent:
        yield agent


@pytest.fixture
def engine(docker_client):
    """Removes, after the test, what the uids it registers left on the engine (containers,
    compose networks and volumes, images)."""
    yield from service_leftovers(docker_client)
