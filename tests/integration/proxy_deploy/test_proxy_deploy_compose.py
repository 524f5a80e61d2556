"""The compose method through service.app.deploy: a two-service project whose selected service
is served through its domain (alias ``<project>-<service>`` on pulseup-net), redeployed, an
unsafe compose file refused while the project keeps serving, rollback refused, delete runs
``down``; service.app.install stores the method."""
import pytest
from pdsupport import http_get, wait_for_body

from agent.errors import AgentError

# busybox as PID 1 ignores SIGTERM: a short grace keeps recreate and down quick
COMPOSE = """\
version: '3.8'
services:
  web:
    image: pulseup-test/appbase:latest
    stop_grace_period: 1s
    command: ["sh", "-c", "echo {body}-$$GREETING > /www/index.html && exec httpd -f -p 8080 -h /www"]
    volumes:
      - ./static:/static:ro
  worker:
    image: pulseup-test/appbase:latest
    stop_grace_period: 1s
    command: ["sh", "-c", "while true; do sleep 1; done"]
"""
SERVICE = {"deployment_method": "docker-compose", "compose_selected_services": ["web"]}


def deploy(agent, git_server, uid, dep, sha, service=SERVICE, **extra):
    data = {"service_uid": uid, "deployment_uid": dep, "github_repo": f"{git_server.base_url}/{uid}.git",
            "access_token": git_server.token, "github_branch": "main", "commit_sha": sha,
            "port_mappings": [{"external": 0, "internal": 8080}], "health_timeout_seconds": 30,
            "env_vars": {"GREETING": "hi"}, "service": service}
    data.update(extra)
    return agent.call("service.app.deploy", data)


@pytest.fixture
def compose_available(pd_agent):
    try:
        pd_agent.services.compose.command()
    except AgentError as exc:  # never a skip: the compose method is part of issue 9
        pytest.fail(f"docker compose or Debian's docker-compose is needed: {exc.message}")


def test_compose_project_deployed_and_served_through_its_domain(pd_agent, git_server, docker_client, track,
                                                                 compose_available):
    uid, domain = "pd-cmp", "pd-cmp.example.test"
    cfg = pd_agent.cfg
    track(uid)
    _, sha1 = git_server.add_repo(uid, {"docker-compose.yml": COMPOSE.format(body="compose-v1"),
                                        "static/readme.txt": "static\n"})
    sha2 = git_server.commit(uid, {"docker-compose.yml": COMPOSE.format(body="compose-v2")}, message="v2")
    unsafe = COMPOSE.format(body="unsafe").replace("./static:/static:ro", "/var/run:/host-run")
    sha3 = git_server.commit(uid, {"docker-compose.yml": unsafe}, message="unsafe")

    installed = pd_agent.call("service.app.install", {
        "service_uid": uid, "github_repo": f"{git_server.base_url}/{uid}.git", "access_token": git_server.token,
        "github_branch": "main", "commit_sha": sha1, "service": SERVICE})
    assert installed["success"], installed
    assert installed["data"]["build_method"] == "docker-compose"

    # ports given, two services, none selected: refused before anything runs
    ambiguous = deploy(pd_agent, git_server, uid, "pd-cmp-0", sha1, service={"deployment_method": "docker-compose"})
    assert ambiguous["code"] == "invalid_argument" and "select exactly one service" in ambiguous["error"]

    first = deploy(pd_agent, git_server, uid, "pd-cmp-1", sha1)
    assert first["success"], first
    data = first["data"]
    assert data["deployment_method"] == "docker-compose" and data["deployment_color"] == "compose"
    assert data["container_name"] == f"pulseup-{uid}" and data["commit_sha"] == sha1
    labelled = docker_client.containers.list(filters={"label": f"pulseup.service_uid={uid}"})
    assert sorted(c.labels["com.docker.compose.service"] for c in labelled) == ["web", "worker"]
    assert {c.labels["pulseup.deployment_uid"] for c in labelled} == {"pd-cmp-1"}

    added = pd_agent.call("service.domain.manage", {"action": "add", "service_uid": uid, "domain": domain,
                                                    "port": 8080, "ssl": False})
    assert added["success"], added
    assert added["data"]["domain_info"]["upstream_container"] == f"pulseup-{uid}-web"
    wait_for_body(cfg, domain, "compose-v1-hi")

    second = deploy(pd_agent, git_server, uid, "pd-cmp-2", sha2)
    assert second["success"], second
    wait_for_body(cfg, domain, "compose-v2-hi")
    # compose v1 names containers <project>_<service>_1, v2 <project>-<service>-1
    names = sorted(c.name for c in docker_client.containers.list(filters={"label": f"pulseup.service_uid={uid}"}))
    assert len(names) == 2

    refused = deploy(pd_agent, git_server, uid, "pd-cmp-3", sha3)
    assert refused["code"] == "failed_precondition" and "/var/run" in refused["error"], refused
    assert http_get(cfg, domain) == (200, "compose-v2-hi\n")
    statuses = [(e["deployment_uid"], e["status"]) for e in pd_agent.events_named("update_deployment_status")
                if e["status"] != "in_progress" and e["service_uid"] == uid]
    assert statuses == [("pd-cmp-0", "failed"), ("pd-cmp-1", "completed"), ("pd-cmp-2", "completed"),
                        ("pd-cmp-3", "failed")]

    rollback = pd_agent.call("service.deploy.rollback", {"service_uid": uid})
    assert rollback["code"] == "failed_precondition", rollback

    deleted = pd_agent.call("service.delete", {"service_uid": uid})
    assert deleted["success"], deleted
    assert deleted["data"]["domains_removed"] == [domain]
    assert sorted(deleted["data"]["containers_deleted"]) == names
    assert docker_client.containers.list(all=True, filters={"label": f"com.docker.compose.project=pulseup-{uid}"}) == []
    assert docker_client.networks.list(filters={"label": f"com.docker.compose.project=pulseup-{uid}"}) == []
    assert http_get(cfg, domain)[0] == 404
