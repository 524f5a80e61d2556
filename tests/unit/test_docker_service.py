import docker.errors
import pytest
import requests

from agent.errors import AgentError
from agent.services.docker import (
    DockerService, map_error, parse_docker_time, service_status, translate)
from tests.unit.test_docker_fakes import (  # noqa: F401 (fixtures)
    api_error, app, cfg, database, docker_service, fake_client)


@pytest.mark.parametrize("state,health,expected", [
    ("running", "none", "running"), ("running", "healthy", "running"), ("running", "unhealthy", "failed"),
    ("restarting", "none", "restarting"), ("created", "none", "pending"), ("paused", "none", "stopped"),
    ("exited", "none", "stopped"), ("dead", "none", "failed"), ("removing", "none", "stopping"),
])
def test_state_mapping_of_commands_1_7(state, health, expected):
    assert service_status(state, health) == expected


@pytest.mark.parametrize("exc,code", [
    (api_error(404, "No such container: x"), "not_found"),
    (api_error(409, "name in use"), "conflict"),
    (api_error(403, "denied"), "permission_denied"),
    (api_error(401, "unauthorized"), "permission_denied"),
    (api_error(400, "invalid reference format"), "invalid_argument"),
    (api_error(500, "driver failed"), "internal"),
    (requests.exceptions.ConnectionError("refused"), "unavailable"),
    (docker.errors.DockerException("Error while fetching server API version: boom"), "unavailable"),
    (FileNotFoundError(2, "No such file"), "unavailable"),
])
def test_one_place_maps_docker_errors(exc, code):
    error = map_error(exc, "thing")
    assert error.code == code
    if code == "unavailable":
        assert error.message.startswith("docker daemon unreachable: ")
    if code == "internal":
        assert error.message.startswith("internal error: ")


def test_translate_chains_the_original():
    with pytest.raises(AgentError) as info:
        with translate("x"):
            raise api_error(409, "busy")
    assert info.value.code == "conflict" and isinstance(info.value.__cause__, docker.errors.APIError)


def test_client_is_lazy_and_a_failed_connect_is_not_cached(cfg):
    attempts = []

    def factory():
        attempts.append(1)
        if len(attempts) == 1:
            raise requests.exceptions.ConnectionError("no socket")
        return "client"

    service = DockerService(cfg, client_factory=factory)
    assert attempts == []
    with pytest.raises(AgentError) as info:
        service.client
    assert info.value.code == "unavailable"
    assert service.client == "client" and service.client == "client" and len(attempts) == 2


def test_get_container_exact_name_or_id_and_managed(docker_service, fake_client):
    managed = app(fake_client, "web", 1)
    other = fake_client.containers.add("plain", labels={})
    assert docker_service.get_container(managed.name) is managed
    assert docker_service.get_container(managed.id[:12]) is managed
    with pytest.raises(AgentError) as info:
        docker_service.get_container("plain")
    assert info.value.code == "permission_denied"
    assert docker_service.get_container("plain", managed=False) is other
    with pytest.raises(AgentError) as info:
        docker_service.get_container("no-such")
    assert info.value.code == "not_found"
    with pytest.raises(AgentError) as info:
        docker_service.get_container("bad name!")
    assert info.value.code == "invalid_argument" and info.value.field == "container_id"


def test_get_container_refuses_a_name_resolved_as_id_prefix(docker_service, fake_client):
    target = app(fake_client, "web", 1, cid="abcdef" + "0" * 58)
    # "abcdef" is a valid name; Docker would resolve it as an id prefix: not the same thing
    with pytest.raises(AgentError) as info:
        docker_service.get_container("abcdef")
    assert info.value.code == "not_found"
    assert docker_service.get_container("abcdef000000") is target


def test_active_container_rule_of_commands_1_4(docker_service, fake_client):
    app(fake_client, "web", 1, state="exited")
    v2 = app(fake_client, "web", 2)
    app(fake_client, "web", 3, candidate=True)
    app(fake_client, "web", 4, state="dead")
    database(fake_client, "web")
    app(fake_client, "webx", 9)          # another service whose uid starts the same
    assert docker_service.active_container("web") is v2
    assert [c.name for c in docker_service.app_containers("web")] == [
        "pulseup-app-web-v0004", "pulseup-app-web-v0002", "pulseup-app-web-v0001"]


def test_no_active_container_when_all_stopped(docker_service, fake_client):
    app(fake_client, "web", 1, state="exited")
    assert docker_service.active_container("web") is None


def test_service_containers_of_commands_2_8(docker_service, fake_client):
    app(fake_client, "web", 1, state="exited")
    v2 = app(fake_client, "web", 2, state="exited")
    db = database(fake_client, "web")
    worker = fake_client.containers.add("pulseup-web-worker-1", labels={
        "pulseup.managed": "true", "pulseup.service_uid": "web", "com.docker.compose.project": "pulseup-web"})
    # nothing active: the highest-version non-candidate app container is used
    assert docker_service.service_containers("web") == [db, worker, v2]


def test_unmanaged_containers_are_never_service_containers(docker_service, fake_client):
    fake_client.containers.add("pulseup-app-web-v0001", labels={"pulseup.service_uid": "web"})
    assert docker_service.find_service_containers("web") == []
    assert docker_service.database_container("web") is None


def test_ensure_network_matches_names_exactly(docker_service, fake_client):
    from tests.unit.test_docker_fakes import FakeNetwork
    fake_client.networks.items.append(FakeNetwork("pulseup-net-old"))
    network = docker_service.ensure_network()
    assert network.name == "pulseup-net"
    assert docker_service.ensure_network() is network
    assert [n.name for n in fake_client.networks.items] == ["pulseup-net-old", "pulseup-net"]


def test_ensure_network_survives_a_concurrent_create(docker_service, fake_client):
    from tests.unit.test_docker_fakes import FakeNetwork

    class Racing:
        def __init__(self):
            self.calls = 0

    error = api_error(409, "network with name pulseup-net already exists")
    fake_client.networks.create_error = error
    original_list = fake_client.networks.list
    state = Racing()

    def racing_list(names=None):
        state.calls += 1
        if state.calls == 2:   # someone else created it between our list and create
            fake_client.networks.items.append(FakeNetwork("pulseup-net"))
        return original_list(names)

    fake_client.networks.list = racing_list
    assert docker_service.ensure_network().name == "pulseup-net"


def test_expected_marks_and_status_dedup(docker_service):
    docker_service.mark_expected("c1")
    assert docker_service.is_expected("c1") and not docker_service.is_expected("c2")
    docker_service.clear_expected("c1")
    assert not docker_service.is_expected("c1")
    assert docker_service.record_status("web", "running") is True
    assert docker_service.record_status("web", "running") is False
    assert docker_service.record_status("web", "stopped") is True


def test_parse_docker_time_nanoseconds_and_zero():
    assert parse_docker_time("0001-01-01T00:00:00Z") is None
    assert parse_docker_time("2024-01-02T03:04:05.123456789Z") == pytest.approx(1704164645.123456789)
    assert parse_docker_time("2024-01-02T03:04:05Z") == 1704164645.0
