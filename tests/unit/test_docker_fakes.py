"""A small hand-written fake of the docker SDK client, shared by the docker unit tests.

It holds containers, images and volumes in memory, answers the few SDK calls the agent
makes (containers.get/list, images.list/remove, volumes.get, networks) and raises the
SDK's own exception classes, so the real DockerService translation runs against it.
"""

import types

import docker.errors
import pytest

from agent import config
from agent.services import Services
from agent.services.docker import DockerService


def api_error(status, message):
    response = types.SimpleNamespace(status_code=status, url="http+docker://fake", reason=message)
    cls = docker.errors.NotFound if status == 404 else docker.errors.APIError
    return cls(message, response=response, explanation=message)


class FakeContainer:
    def __init__(self, client, name, labels=None, state="running", health=None, image="busybox",
                 cid=None, exit_code=0, exposed=(), ip=None, memory=0):
        self.client = client
        self.id = cid or (format(len(client.containers.items) + 1, "x") * 64)[:64]
        self.calls = []
        self.attrs = {
            "Id": self.id, "Name": "/" + name, "Created": f"2024-01-01T00:00:{len(client.containers.items):02d}Z",
            "Config": {"Labels": dict(labels or {}), "Image": image, "Tty": False,
                       "ExposedPorts": {f"{p}/tcp": {} for p in exposed}},
            "State": {"Status": state, "Running": state == "running", "ExitCode": exit_code,
                      "StartedAt": "2024-01-01T00:00:00.5Z", "Error": ""},
            "HostConfig": {"Memory": memory}, "RestartCount": 0,
            "NetworkSettings": {"Ports": {}, "Networks": {"pulseup-net": {"IPAddress": ip or ""}}},
        }
        if health:
            self.attrs["State"]["Health"] = {"Status": health}
        self.fail = {}   # action -> exception to raise

    @property
    def name(self):
        return self.attrs["Name"].lstrip("/")

    @property
    def labels(self):
        return self.attrs["Config"]["Labels"]

    def set_state(self, state, health=None):
        self.attrs["State"].update(Status=state, Running=state == "running")
        if health:
            self.attrs["State"]["Health"] = {"Status": health}

    def _act(self, action, new_state=None):
        self.calls.append(action)
        if action in self.fail:
            raise self.fail[action]
        if new_state:
            self.set_state(new_state)

    def start(self):
        self._act("start", "running")

    def stop(self, timeout=None):
        self._act("stop", "exited")

    def restart(self, timeout=None):
        self._act("restart", "running")

    def unpause(self):
        self._act("unpause", "running")

    def reload(self):
        if self.id not in self.client.containers.items:
            raise api_error(404, "No such container")

    def remove(self, force=False, v=False):
        self._act("remove")
        self.client.containers.items.pop(self.id, None)

    def __eq__(self, other):
        return isinstance(other, FakeContainer) and other.id == self.id

    def __hash__(self):
        return hash(self.id)


class FakeContainers:
    def __init__(self, client):
        self.client = client
        self.items = {}
        self.list_calls = []

    def add(self, name, **kwargs):
        container = FakeContainer(self.client, name, **kwargs)
        self.items[container.id] = container
        return container

    def get(self, ref):
        for container in self.items.values():
            if container.name == ref or container.id == ref:
                return container
        for container in self.items.values():  # Docker also resolves unique id prefixes
            if container.id.startswith(ref):
                return container
        raise api_error(404, f"No such container: {ref}")

    def list(self, all=False, filters=None, ignore_removed=False, **kwargs):
        self.list_calls.append(filters)
        wanted = [tuple(item.split("=", 1)) for item in (filters or {}).get("label", [])]
        return [c for c in self.items.values()
                if (all or c.attrs["State"]["Running"])
                and all_(c.labels.get(key) == value for key, value in wanted)]


def all_(values):
    return all(values)


class FakeImage:
    def __init__(self, tags):
        self.tags = list(tags)


class FakeImages:
    def __init__(self):
        self.items = []
        self.removed = []
        self.fail = {}

    def list(self, name=None):
        repo = name
        return [i for i in self.items if any(t.rpartition(":")[0] == repo for t in i.tags)]

    def remove(self, tag):
        if tag in self.fail:
            raise self.fail[tag]
        for image in self.items:
            if tag in image.tags:
                image.tags.remove(tag)
                self.removed.append(tag)
                return
        raise api_error(404, f"No such image: {tag}")


class FakeVolume:
    def __init__(self, volumes, name):
        self.volumes, self.name = volumes, name

    def remove(self):
        self.volumes.names.discard(self.name)


class FakeVolumes:
    def __init__(self):
        self.names = set()

    def get(self, name):
        if name not in self.names:
            raise api_error(404, f"no such volume: {name}")
        return FakeVolume(self, name)


class FakeNetwork:
    def __init__(self, name):
        self.name = name


class FakeNetworks:
    def __init__(self):
        self.items = []
        self.create_error = None

    def list(self, names=None):
        # like Docker, the name filter matches substrings
        return [n for n in self.items if any(name in n.name for name in names or [""])]

    def create(self, name, **kwargs):
        if self.create_error:
            error, self.create_error = self.create_error, None
            raise error
        network = FakeNetwork(name)
        self.items.append(network)
        return network


class FakeAPI:
    def __init__(self):
        self.stats_result = {}
        self.api_version = "1.41"

    def stats(self, container_id, stream=False):
        return self.stats_result


class FakeClient:
    def __init__(self):
        self.containers = FakeContainers(self)
        self.images = FakeImages()
        self.volumes = FakeVolumes()
        self.networks = FakeNetworks()
        self.api = FakeAPI()
        self.closed = False

    def close(self):
        self.closed = True


def app(client, uid, version, state="running", candidate=False, **kwargs):
    """An app container labelled as the agent labels them."""
    labels = {"pulseup.managed": "true", "pulseup.service_uid": uid,
              "pulseup.deployment_uid": f"dep{version}", "pulseup.lifecycle.version": str(version)}
    labels.update(kwargs.pop("labels", {}))
    name = f"pulseup-app-{uid}-v{version:04d}" + ("-candidate" if candidate else "")
    return client.containers.add(name, labels=labels, state=state,
                                 image=kwargs.pop("image", f"pulseup-app-{uid}:abc{version}"), **kwargs)


def database(client, uid, state="running"):
    labels = {"pulseup.managed": "true", "pulseup.service_uid": uid, "pulseup.database_type": "postgresql"}
    return client.containers.add(f"pulseup-db-{uid}", labels=labels, state=state)


@pytest.fixture
def fake_client():
    return FakeClient()


@pytest.fixture
def cfg(tmp_path):
    return config.defaults().replace(state_dir=str(tmp_path / "state"), apps_dir=str(tmp_path / "apps"),
                                     deployment_dir=str(tmp_path / "deployments"),
                                     deployment_log_dir=str(tmp_path / "logs"),
                                     pulseup_backup_dir=str(tmp_path / "backups"),
                                     agent_log_dir=str(tmp_path / "agentlog"))


@pytest.fixture
def docker_service(cfg, fake_client):
    return DockerService(cfg, client_factory=lambda: fake_client)


class RecordingSink:
    def __init__(self):
        self.events = []

    def emit(self, event, data):
        self.events.append((event, data))

    def named(self, name):
        return [data for event, data in self.events if event == name]


@pytest.fixture
def services(cfg, docker_service):
    services = Services(cfg, events=RecordingSink())
    services.__dict__["docker"] = docker_service   # the cached_property's slot
    yield services
    services.group.kill()
