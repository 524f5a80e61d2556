"""agent/services/selfnet.py on the real engine: a container attached to pulseup-net once,
a container of another engine left alone, and the id found from inside a real container."""
import uuid

import pytest

from agent import config
from agent.services import selfnet
from agent.services.docker import DockerService

pytestmark = pytest.mark.integration


@pytest.fixture
def service(docker_host, test_network):
    """test_network: the session's pulseup-net is made by its fixture, never twice by name."""
    svc = DockerService(config.defaults().replace(docker_host=docker_host))
    yield svc
    svc.close()


@pytest.fixture
def idle(docker_client, base_image):
    """A container on a network of its own (as a compose project's), not on pulseup-net."""
    name = f"selfnet-{uuid.uuid4().hex[:8]}"
    network = docker_client.networks.create(name, driver="bridge")
    container = docker_client.containers.run(base_image, ["sleep", "300"], detach=True, network=name, name=name)
    yield container
    container.remove(force=True)
    network.remove()


def test_attach_joins_pulseup_net_once(service, idle):
    assert selfnet.attach(service, idle.id) == "attached"
    idle.reload()
    assert set(idle.attrs["NetworkSettings"]["Networks"]) == {idle.name, "pulseup-net"}
    assert selfnet.attach(service, idle.id) == "already"


def test_an_unknown_container_is_foreign(service):
    assert selfnet.attach(service, "ef" * 32) == "foreign"


def test_the_id_read_inside_a_container_is_its_own(idle, tmp_path):
    """The engine's own mountinfo, as a process in the container sees it."""
    code, output = idle.exec_run(["cat", "/proc/self/mountinfo"])
    assert code == 0
    path = tmp_path / "mountinfo"
    path.write_bytes(output)
    assert selfnet.own_container_id(str(path)) == idle.id
