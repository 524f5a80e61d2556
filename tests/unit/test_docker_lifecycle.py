import json
import os
from functools import cached_property

import pytest

from agent.errors import AgentError
from agent.handlers import lifecycle
from agent.services.context import CallContext
from agent.handlers.registry import Registry
from agent.protocol.fields import load_request
from agent.services import Services
from agent.services.app.lifecycle import Lifecycle, primary_port
from tests.unit.test_docker_fakes import (  # noqa: F401 (fixtures)
    FakeImage, api_error, app, cfg, database, docker_service, fake_client, services)


@pytest.fixture
def events():
    return []


@pytest.fixture
def life(docker_service, events):
    return Lifecycle(docker_service, lambda e, d: events.append((e, d)), poll=0.01)


def statuses(events):
    return [d["status"] for e, d in events if e == "update_service_status"]


def test_start_starts_the_service_containers_and_reports_running(life, fake_client, events):
    old = app(fake_client, "web", 1, state="exited")
    new = app(fake_client, "web", 2, state="exited")
    db = database(fake_client, "web", state="exited")
    reply = life.start("web")
    assert reply == {"service_uid": "web", "container": new.name, "containers": [db.name, new.name],
                     "message": "Service started"}
    assert new.calls == ["start"] and db.calls == ["start"] and old.calls == []
    assert statuses(events) == ["running"]
    assert events[0][1]["service_uid"] == "web" and events[0][1]["timestamp"].endswith("Z")


def test_start_with_nothing_is_not_found(life):
    with pytest.raises(AgentError) as info:
        life.start("ghost")
    assert info.value.code == "not_found"


def test_start_waits_for_health_and_fails_when_unhealthy(life, fake_client, events):
    container = app(fake_client, "web", 1, state="exited", health="starting")
    checks = []

    def reload():
        checks.append(1)
        if len(checks) == 3:
            container.attrs["State"]["Health"]["Status"] = "unhealthy"

    container.reload = reload
    with pytest.raises(AgentError) as info:
        life.start("web")
    assert info.value.code == "health_check_failed" and len(checks) == 3
    assert statuses(events) == ["failed"]
    assert "unhealthy" in events[-1][1]["error"]


def test_start_fails_when_the_container_exits(life, fake_client, events):
    container = app(fake_client, "web", 1, state="exited", exit_code=3)
    container.start = lambda: container.calls.append("start")   # it never comes up
    with pytest.raises(AgentError) as info:
        life.start("web")
    assert info.value.code == "health_check_failed" and "code 3" in info.value.message


def test_start_gives_up_at_the_deadline(docker_service, fake_client, events):
    app(fake_client, "web", 1, state="exited", health="starting")
    life = Lifecycle(docker_service, lambda e, d: events.append((e, d)),
                     remaining=lambda: 0.05, poll=0.01)
    with pytest.raises(AgentError) as info:
        life.start("web")
    assert info.value.code == "deadline_exceeded"
    assert statuses(events) == []   # a deadline is the operation's end, not a service failure


def test_stop_stops_every_running_labelled_container_and_marks_them_expected(life, docker_service, fake_client, events):
    v1 = app(fake_client, "web", 1)
    v2 = app(fake_client, "web", 2)
    gone = app(fake_client, "web", 3, state="exited")
    reply = life.stop("web")
    assert reply["stopped_containers"] == sorted([v1.name, v2.name])
    assert gone.calls == []
    assert docker_service.is_expected(v1.id) and docker_service.is_expected(v2.id)
    assert statuses(events) == ["stopping", "stopped"]


def test_stop_of_a_stopped_service_succeeds(life, fake_client, events):
    app(fake_client, "web", 1, state="exited")
    reply = life.stop("web")
    assert reply["stopped_containers"] == [] and reply["message"] == "Service already stopped"


def test_stop_error_reports_partial_results(life, fake_client, events):
    ok = app(fake_client, "web", 1)
    bad = app(fake_client, "web", 2)
    bad.fail["stop"] = api_error(500, "cannot kill")
    vanished = app(fake_client, "web", 3)
    vanished.fail["stop"] = api_error(404, "No such container")
    with pytest.raises(AgentError) as info:
        life.stop("web")
    details = info.value.details
    assert info.value.code == "internal"
    assert details["stopped_containers"] == sorted([ok.name, vanished.name])
    assert len(details["errors"]) == 1 and "cannot kill" in details["errors"][0]
    assert statuses(events) == ["stopping", "failed"]


def test_restart_reports_restarting_then_running(life, docker_service, fake_client, events):
    container = app(fake_client, "web", 1)
    reply = life.restart("web")
    assert container.calls == ["restart"] and reply["containers"] == [container.name]
    assert statuses(events) == ["restarting", "running"]
    assert docker_service.is_expected(container.id)   # its die event is ours


def test_status_of_active_container(life, fake_client):
    old = app(fake_client, "web", 1, state="exited", exit_code=1)
    new = app(fake_client, "web", 2, health="healthy", labels={"pulseup.commit_sha": "a" * 40}, exposed=[8080])
    new.attrs["NetworkSettings"]["Ports"] = {"8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": "18080"}]}
    reply = life.status("web")
    assert reply["status"] == "running" and reply["health"] == "healthy"
    assert reply["deployment"] == {"name": new.name, "status": "running", "port": 18080,
                                   "updated_at": "2024-01-01T00:00:00.500000Z", "error": ""}
    by_name = {c["name"]: c for c in reply["containers"]}
    assert by_name[new.name]["version"] == 2 and by_name[new.name]["commit_sha"] == "a" * 40
    assert by_name[old.name]["status"] == "stopped"


def test_status_falls_back_to_database_and_to_stopped(life, fake_client):
    assert life.status("web") == {"service_uid": "web", "status": "stopped", "health": "none", "containers": []}
    database(fake_client, "web", state="restarting")
    assert life.status("web")["status"] == "restarting"


def test_primary_port_prefers_published_then_exposed(fake_client):
    container = app(fake_client, "web", 1, exposed=[9000, 3000])
    container.attrs["NetworkSettings"]["Ports"] = {}
    assert primary_port(container) == 3000
    container.attrs["Config"]["ExposedPorts"] = {}
    assert primary_port(container) == 0


# -- delete ---------------------------------------------------------------------------

class DomainsFake:
    def __init__(self):
        self.calls = []

    def on_service_delete(self, uid, options):
        self.calls.append((uid, options))
        return {"domains_removed": ["example.com"]}


def run(registry, name, services, data):
    command = registry.get(name)
    ctx = CallContext(services, name)
    return command.func(ctx, load_request(command.schema, data))


@pytest.fixture
def registry():
    registry = Registry()
    lifecycle.register(registry)
    return registry


def test_delete_removes_containers_images_volume_backups_and_files(registry, services, fake_client, cfg):
    v1 = app(fake_client, "web", 1, state="exited", image="pulseup-app-web:aaaaaaaaaaaa")
    v2 = app(fake_client, "web", 2, image="pulseup-app-web:bbbbbbbbbbbb", labels={"pulseup.deployment_uid": "dep_2"})
    db = database(fake_client, "web")
    legacy = fake_client.containers.add("pulseup-app-web", labels={})
    foreign_legacy = fake_client.containers.add("pulseup-db-web2", labels={})
    other = app(fake_client, "web2", 1, image="pulseup-app-web2:cccccccccccc")
    fake_client.images.items += [FakeImage(["pulseup-app-web:aaaaaaaaaaaa"]), FakeImage(["pulseup-app-web:bbbbbbbbbbbb"]),
                                 FakeImage(["pulseup-app:web", "pulseup-app:web2"]),
                                 FakeImage(["pulseup-app-web2:cccccccccccc"])]
    fake_client.volumes.names |= {"pulseup-db-vol-web", "pulseup-db-vol-web2"}
    for path in (f"{cfg.pulseup_backup_dir}/web/x.zst", f"{cfg.apps_dir}/web/Dockerfile",
                 f"{cfg.deployment_log_dir}/web_build.log", f"{cfg.deployment_log_dir}/dep_2_steps.json",
                 f"{cfg.deployment_log_dir}/web2_build.log"):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").close()
    with_proxy = ProxyServices(cfg, events=services.events)
    with_proxy.__dict__["docker"] = services.docker
    reply = run(registry, "service.delete", with_proxy, {"service_uid": "web", "delete_volumes": True,
                                                         "delete_backups": True, "purge_files": True})
    domains = with_proxy.proxy
    assert sorted(reply["containers_deleted"]) == sorted([v1.name, v2.name, db.name, legacy.name])
    assert reply["deletion_count"] == 4
    assert sorted(reply["images_removed"]) == ["pulseup-app-web:aaaaaaaaaaaa", "pulseup-app-web:bbbbbbbbbbbb",
                                               "pulseup-app:web"]
    assert reply["volumes_removed"] == ["pulseup-db-vol-web"] and fake_client.volumes.names == {"pulseup-db-vol-web2"}
    assert reply["domains_removed"] == ["example.com"] and domains.calls[0][0] == "web"
    assert set(fake_client.containers.items) == {foreign_legacy.id, other.id}
    assert not os.path.exists(f"{cfg.pulseup_backup_dir}/web") and not os.path.exists(f"{cfg.apps_dir}/web")
    assert not os.path.exists(f"{cfg.deployment_log_dir}/dep_2_steps.json")
    assert os.path.exists(f"{cfg.deployment_log_dir}/web2_build.log")
    assert "warnings" not in reply


class ProxyServices(Services):
    """A Services container with one more participant, as the proxy service will be."""

    @cached_property
    def proxy(self):
        return DomainsFake()


def test_delete_is_idempotent(registry, services):
    reply = run(registry, "service.delete", services, {"service_uid": "web"})
    assert reply["containers_deleted"] == [] and reply["deletion_count"] == 0
    assert reply["images_removed"] == [] and reply["paths_removed"] == []


def test_delete_failure_carries_partial_results(registry, services, fake_client):
    v1 = app(fake_client, "web", 1, image="pulseup-app-web:aaaaaaaaaaaa")
    stuck = app(fake_client, "web", 2)
    stuck.fail["remove"] = api_error(409, "removal already in progress")
    with pytest.raises(AgentError) as info:
        run(registry, "service.delete", services, {"service_uid": "web"})
    assert info.value.code == "conflict"
    assert info.value.details["containers_deleted"] == [v1.name]


def test_delete_reads_deployments_from_history(registry, services, cfg):
    history = os.path.join(cfg.deployment_dir, "web", "build_history.json")
    os.makedirs(os.path.dirname(history))
    with open(history, "w") as f:
        json.dump([{"deployment_uid": "dep_9"}, {"deployment_uid": "../evil"}], f)
    os.makedirs(cfg.deployment_log_dir)
    open(os.path.join(cfg.deployment_log_dir, "dep_9_build.log"), "w").close()
    reply = run(registry, "service.delete", services, {"service_uid": "web", "purge_files": True})
    assert os.path.join(cfg.deployment_log_dir, "dep_9_build.log") in reply["paths_removed"]


def test_lifecycle_operation_specs():
    registry = Registry()
    lifecycle.register(registry)
    start = registry.get("service.start").operation
    assert (start.operation_id({"service_uid": "a"}), start.timeout_default, start.timeout_max) == ("lifecycle:a", 120, 600)
    assert start.lock_key({"service_uid": "a"}) == "a"
    delete = registry.get("service.delete").operation
    assert delete.preempting and (delete.timeout_default, delete.timeout_max) == (300, 1800)
    assert registry.get("service.status.get").operation is None
