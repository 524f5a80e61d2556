"""Whitelisted commands that act on the test dockerd: docker.list_all (the docker CLI,
argument list, no shell), docker.prune_volumes (never database volumes) and
service.restart_caddy (the container labelled pulseup.component=caddy)."""
import shutil

import docker.errors
import pytest
from ctsupport import IDLE

from agent.errors import AgentError

pytestmark = pytest.mark.integration


def test_docker_list_all_lists_every_container(run, make_app, make_container, uid):
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI on PATH")
    managed = make_app(uid, 1)
    plain = make_container(f"plain-{uid}", {}, IDLE)
    reply = run("agent.command.execute", {"command_id": "docker.list_all"})
    assert reply["exit_code"] == 0 and reply["error"] == ""
    header, *rows = reply["output"].splitlines()
    assert header.split() == ["CONTAINER", "ID", "NAMES", "STATUS", "IMAGE"]
    names = {row.split()[1] for row in rows}
    assert {managed.name, plain.name} <= names
    assert any(row.startswith(managed.id) for row in rows)      # --no-trunc: full ids


def test_prune_volumes_keeps_database_volumes(run, docker_client, uid):
    kept = docker_client.volumes.create(f"pulseup-db-vol-{uid}", labels={"pulseup.component": "database", "pulseup.type": "data"})
    gone = docker_client.volumes.create(f"scratch-{uid}")
    with pytest.raises(AgentError) as info:
        run("agent.command.execute", {"command_id": "docker.prune_volumes"})
    assert info.value.code == "failed_precondition"
    docker_client.volumes.get(gone.name)                      # nothing ran without confirm
    reply = run("agent.command.execute", {"command_id": "docker.prune_volumes", "confirm": True})
    assert gone.name in reply["output"]
    docker_client.volumes.get(kept.name)
    with pytest.raises(docker.errors.NotFound):
        docker_client.volumes.get(gone.name)
    kept.remove()


def test_restart_caddy_restarts_the_labelled_proxy(run, make_container, docker_client, uid):
    make_container("caddy" if not docker_client.containers.list(all=True, filters={"name": "^/caddy$"})
                   else f"caddy-{uid}", {}, IDLE)                  # an unrelated "caddy" is not the proxy
    make_container(f"pulseup-caddy-{uid}", {"pulseup.managed": "true", "pulseup.component": "caddy",
                                            "pulseup.service_uid": "svc_pulseup_caddy"}, IDLE)
    labelled = {c.name: c.attrs["State"]["StartedAt"] for c in docker_client.containers.list(
        all=True, filters={"label": ["pulseup.managed=true", "pulseup.component=caddy"]})}
    reply = run("agent.command.execute", {"command_id": "service.restart_caddy"})
    restarted = reply["output"].removeprefix("restarted ")
    assert restarted in labelled          # another test's proxy may be the one found first
    proxy = docker_client.containers.get(restarted)
    assert proxy.status == "running" and proxy.attrs["State"]["StartedAt"] != labelled[restarted]
