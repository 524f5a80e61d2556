"""A two-service compose project on the private dockerd, its selected service reached through a
domain of the agent's Caddy; an unsafe compose file refused (issue 9 "Done when")."""
import os
import shutil

import pytest
from tests.integration.proxy.proxysupport import http_get, wait_for_body

from agent.errors import AgentError
from agent.services.compose import ComposeService

pytestmark = pytest.mark.integration

COMPOSE = """\
version: '3.8'
services:
  web:
    image: {image}
    command: ["sh", "-c", "echo compose-web > /www/index.html && exec httpd -f -p 8080 -h /www"]
    volumes:
      - ./static:/static:ro
  worker:
    image: {image}
    command: ["sh", "-c", "while true; do sleep 1; done"]
"""


@pytest.fixture
def compose_project(tmp_path, docker_client):
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose (Debian's 1.29) is needed by the compose tests")
    clone = tmp_path / "clone"
    (clone / "static").mkdir(parents=True)
    yield clone
    for container in docker_client.containers.list(
            all=True, filters={"label": "com.docker.compose.project=pulseup-cmp1"}):
        container.remove(force=True)
    for network in docker_client.networks.list(
            filters={"label": "com.docker.compose.project=pulseup-cmp1"}):
        network.remove()


def test_compose_project_served_through_its_domain(proxy_env, compose_project, app_base_image):
    services, _events = proxy_env
    (compose_project / "docker-compose.yml").write_text(COMPOSE.format(image=app_base_image))
    compose = ComposeService(services.cfg, services.docker)
    plan = compose.plan("cmp1", str(compose_project), selected=["web"], needs_target=True)
    assert plan.services == ["web", "worker"] and plan.alias == "pulseup-cmp1-web"
    override = compose.write_override(plan, "cmp1", "dep-c1", [{"external": 0, "internal": 8080}],
                                      {"GREETING": "hi"})
    lines = []
    try:
        result = compose.up(plan, override, 60, lambda text, level: lines.append(text))
    finally:
        os.unlink(override)
    assert result["upstream"] == "pulseup-cmp1-web" and len(result["containers"]) == 2
    labelled = services.docker.find_service_containers("cmp1")
    assert len(labelled) == 2
    assert all(c.attrs["Config"]["Labels"]["pulseup.deployment_uid"] == "dep-c1" for c in labelled)
    assert "GREETING=hi" in labelled[0].attrs["Config"]["Env"]
    # the domain finds the selected service's alias by itself
    info = services.proxy.upsert("cmp1", "compose.example.test", 8080, managed_certificate=False)
    assert info["upstream_container"] == "pulseup-cmp1-web"
    wait_for_body(services.cfg, "compose.example.test", "compose-web")
    assert services.proxy.remove_service("cmp1") == 1
    assert http_get(services.cfg, "compose.example.test")[0] == 404


def test_compose_bind_mount_of_var_run_is_refused(proxy_env, compose_project, app_base_image):
    services, _events = proxy_env
    (compose_project / "docker-compose.yml").write_text(
        COMPOSE.format(image=app_base_image).replace("./static:/static:ro", "/var/run:/var/run"))
    compose = ComposeService(services.cfg, services.docker)
    with pytest.raises(AgentError) as err:
        compose.plan("cmp1", str(compose_project), selected=["web"], needs_target=True)
    assert err.value.code == "failed_precondition" and "/var/run" in err.value.message
