"""agent/services/selfnet.py: which container the agent runs in, and joining pulseup-net."""
import gevent
import pytest

from agent.errors import AgentError
from agent.services import selfnet

CID = "ab" * 32
OTHER = "cd" * 32


def _mountinfo(tmp_path, *lines):
    path = tmp_path / "mountinfo"
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def _line(source, target):
    return f"612 590 8:1 {source} {target} rw,relatime - ext4 /dev/sda1 rw"


@pytest.mark.parametrize("lines, expected", [
    ([_line(f"/var/lib/docker/containers/{CID}/resolv.conf", "/etc/resolv.conf"),
      _line(f"/var/lib/docker/containers/{CID}/hostname", "/etc/hostname")], CID),
    ([_line(f"/srv/d/data/containers/{CID}/hosts", "/etc/hosts")], CID),          # another data-root
    ([_line("/", "/"), _line("/home", "/home")], None),                            # on the host
    ([_line(f"/x/containers/{CID}/hosts", "/etc/hosts"),
      _line(f"/x/containers/{OTHER}/hosts", "/mnt/hosts")], None),                 # ambiguous: none
    ([_line(f"/x/containers/{CID}/hostnameX", "/etc/hostname")], None),
])
def test_own_container_id(tmp_path, lines, expected):
    assert selfnet.own_container_id(_mountinfo(tmp_path, *lines)) == expected


def test_unreadable_mountinfo_means_not_in_a_container(tmp_path):
    assert selfnet.own_container_id(str(tmp_path / "missing")) is None


class _Network:
    def __init__(self, fail=None):
        self.connected, self.fail = [], fail

    def connect(self, container):
        if self.fail:
            raise self.fail
        self.connected.append(container.id)


class _Containers:
    def __init__(self, known):
        self.known = known

    def get(self, cid):
        import docker.errors
        if cid not in self.known:
            raise docker.errors.NotFound("no such container")
        return self.known[cid]


class _Docker:
    """The slice of DockerService that selfnet uses."""
    def __init__(self, networks=(), known=True, connect_error=None):
        container = type("C", (), {"id": CID, "attrs": {"NetworkSettings": {"Networks": dict.fromkeys(networks, {})}}})()
        self.client = type("Client", (), {"containers": _Containers({CID: container} if known else {})})()
        self.network = _Network(connect_error)
        self.ensured = []

    def ensure_network(self, name):
        self.ensured.append(name)
        return self.network


def test_attach_connects_once():
    docker = _Docker(networks=("compose_default",))
    assert selfnet.attach(docker, CID) == "attached"
    assert docker.ensured == ["pulseup-net"] and docker.network.connected == [CID]
    assert selfnet.attach(_Docker(networks=("pulseup-net",)), CID) == "already"


def test_a_container_of_another_engine_is_left_alone():
    docker = _Docker(known=False)
    assert selfnet.attach(docker, CID) == "foreign" and docker.ensured == []


def test_a_concurrent_attachment_is_fine_other_errors_are_translated():
    import docker.errors
    race = docker.errors.APIError("endpoint with name x already exists in network pulseup-net")
    assert selfnet.attach(_Docker(connect_error=race), CID) == "attached"
    with pytest.raises(AgentError) as err:
        selfnet.attach(_Docker(connect_error=docker.errors.APIError("boom")), CID)
    assert err.value.code == "internal"


def test_join_retries_until_the_engine_answers(tmp_path):
    mountinfo = _mountinfo(tmp_path, _line(f"/var/lib/docker/containers/{CID}/hosts", "/etc/hosts"))
    docker, calls = _Docker(), []

    def get_docker():
        calls.append(1)
        if len(calls) < 3:
            raise AgentError("unavailable", "docker daemon unreachable")
        return docker
    outcome = gevent.spawn(selfnet.join_when_containerised, get_docker, mountinfo, 0.01).get(timeout=10)
    assert outcome == "attached" and len(calls) == 3 and docker.network.connected == [CID]


def test_join_outside_a_container_never_asks_for_docker(tmp_path):
    mountinfo = _mountinfo(tmp_path, _line("/", "/"))
    assert selfnet.join_when_containerised(lambda: pytest.fail("asked"), mountinfo) is None
