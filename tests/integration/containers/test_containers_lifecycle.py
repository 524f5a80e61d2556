"""service.start/stop/restart/status.get/delete on real containers of the test dockerd."""
import io
import tarfile

import docker.errors
import pytest
from ctsupport import IDLE

from agent.errors import AgentError

pytestmark = pytest.mark.integration


def statuses(services, uid):
    return [e["status"] for e in services.events.named("update_service_status") if e["service_uid"] == uid]


def test_stop_start_restart_and_status(run, services, make_app, uid):
    old = make_app(uid, 1)
    old.stop(timeout=5)
    active = make_app(uid, 2, labels={"pulseup.commit_sha": "c" * 40})

    status = run("service.status.get", {"service_uid": uid})
    assert status["status"] == "running" and status["health"] == "none"
    assert status["deployment"]["name"] == active.name and status["deployment"]["updated_at"].endswith("Z")
    by_name = {c["name"]: c for c in status["containers"]}
    assert by_name[active.name]["version"] == 2 and by_name[active.name]["commit_sha"] == "c" * 40
    assert by_name[old.name]["status"] == "stopped"

    stopped = run("service.stop", {"service_uid": uid})
    assert stopped["stopped_containers"] == [active.name]
    active.reload()
    assert active.status == "exited"
    assert run("service.status.get", {"service_uid": uid})["status"] == "stopped"

    started = run("service.start", {"service_uid": uid})
    # nothing is active: the highest-version non-candidate container is the one started
    assert started["container"] == active.name and started["containers"] == [active.name]
    old.reload()
    assert old.status == "exited"

    restarted = run("service.restart", {"service_uid": uid})
    assert restarted["container"] == active.name
    active.reload()
    assert active.status == "running"
    assert statuses(services, uid) == ["stopping", "stopped", "running", "restarting", "running"]


def test_start_waits_for_the_health_check(run, make_app, uid):
    container = make_app(uid, 1, script=IDLE, healthcheck={
        "test": ["CMD", "sh", "-c", "test -f /tmp/ready || { touch /tmp/ready; exit 1; }"],
        "interval": 200_000_000, "retries": 3})
    container.stop(timeout=5)
    reply = run("service.start", {"service_uid": uid})
    container.reload()
    assert reply["container"] == container.name
    assert container.attrs["State"]["Health"]["Status"] == "healthy"


def test_start_of_a_crashing_container_fails(run, services, make_app, uid):
    container = make_app(uid, 1, script="exit 3")
    container.wait(timeout=20)
    with pytest.raises(AgentError) as info:
        run("service.start", {"service_uid": uid})
    assert info.value.code == "health_check_failed" and "code 3" in info.value.message
    assert statuses(services, uid) == ["failed"]


def test_unknown_service_is_not_found(run, uid):
    for command in ("service.start", "service.restart"):
        with pytest.raises(AgentError) as info:
            run(command, {"service_uid": uid})
        assert info.value.code == "not_found"
    assert run("service.stop", {"service_uid": uid})["stopped_containers"] == []
    assert run("service.status.get", {"service_uid": uid}) == {
        "service_uid": uid, "status": "stopped", "health": "none", "containers": []}


def _tag_image(docker_client, base_image, repository, tag):
    """A tiny distinct image (one extra file) tagged repository:tag."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        dockerfile = f"FROM {base_image}\nLABEL pulseup.test={repository}-{tag}\n".encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    data.seek(0)
    image, _ = docker_client.images.build(fileobj=data, custom_context=True, tag=f"{repository}:{tag}", pull=False)
    return image


def test_delete_removes_containers_images_and_volume(run, make_app, make_container, docker_client, base_image, uid):
    image = _tag_image(docker_client, base_image, f"pulseup-app-{uid}", "aaaaaaaaaaaa")
    docker_client.images.get(image.id).tag("pulseup-app", uid)
    other = _tag_image(docker_client, base_image, f"pulseup-app-{uid}x", "bbbbbbbbbbbb")
    v1 = make_app(uid, 1, image=f"pulseup-app-{uid}:aaaaaaaaaaaa")
    v2 = make_app(uid, 2)
    legacy = make_container(f"pulseup-app-{uid}", {}, IDLE)
    stranger = make_container(f"stranger-{uid}", {"pulseup.service_uid": uid}, IDLE)   # not managed
    docker_client.volumes.create(f"pulseup-db-vol-{uid}", labels={"pulseup.component": "database"})

    reply = run("service.delete", {"service_uid": uid, "delete_volumes": True})
    assert sorted(reply["containers_deleted"]) == sorted([v1.name, v2.name, legacy.name])
    assert reply["deletion_count"] == 3
    assert sorted(reply["images_removed"]) == [f"pulseup-app-{uid}:aaaaaaaaaaaa", f"pulseup-app:{uid}"]
    assert reply["volumes_removed"] == [f"pulseup-db-vol-{uid}"]
    for name in (v1.name, v2.name, legacy.name):
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(name)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(f"pulseup-app-{uid}:aaaaaaaaaaaa")
    docker_client.images.get(other.id)                     # a similar name is not touched
    stranger.reload()                                      # an unmanaged container is never removed
    again = run("service.delete", {"service_uid": uid})
    assert again["containers_deleted"] == [] and again["images_removed"] == []
    docker_client.images.remove(other.id, force=True)
