"""Fixtures of the container integration tests: labelled busybox containers on the private
test dockerd, a Services container pointed at it, and a way to call handlers directly.

Every test gets its own service uid, so tests never see each other's containers; the
containers of a test are removed afterwards.
"""
import os
import sys
import uuid

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from ctsupport import LOOP, Sink, app_labels  # noqa: E402

from agent import config  # noqa: E402
from agent.handlers import agent_commands, lifecycle, logs, monitoring
from agent.services.context import CallContext
from agent.handlers.registry import Registry
from agent.protocol.fields import load_request
from agent.services import Services

@pytest.fixture
def uid():
    return f"it{uuid.uuid4().hex[:10]}"


@pytest.fixture
def agent_cfg(docker_host, tmp_path):
    return config.defaults().replace(
        docker_host=docker_host, state_dir=str(tmp_path / "state"), apps_dir=str(tmp_path / "apps"),
        deployment_dir=str(tmp_path / "deployments"), deployment_log_dir=str(tmp_path / "logs"),
        pulseup_backup_dir=str(tmp_path / "backups"), agent_log_dir=str(tmp_path / "agentlog"))


@pytest.fixture
def services(agent_cfg):
    services = Services(agent_cfg, events=Sink())
    yield services
    services.close()


@pytest.fixture
def registry():
    registry = Registry()
    for module in (lifecycle, logs, monitoring, agent_commands):
        module.register(registry)
    return registry


@pytest.fixture
def run(registry, services):
    """run(command, data) -> reply data, through the command's schema like the dispatcher."""
    def call(name, data=None):
        command = registry.get(name)
        ctx = CallContext(services, name, emit=lambda e, d: services.events.emit(e, d))
        return command.func(ctx, load_request(command.schema, data or {}))
    return call


@pytest.fixture
def make_container(docker_client, base_image, test_network):
    """make_container(name, labels, script=LOOP, image=base_image, **run_kwargs) -> Container;
    ``script=None`` runs the image's own command."""
    made = []

    def make(name, labels, script=LOOP, image=None, **kwargs):
        command = ["sh", "-c", script] if script is not None else None
        container = docker_client.containers.run(
            image or base_image, command, name=name, labels=labels, detach=True,
            network=test_network, **kwargs)
        made.append(container)
        return container

    yield make
    for container in made:
        try:
            container.remove(force=True, v=True)
        except Exception:  # already removed by the test (service.delete)
            pass


@pytest.fixture
def make_app(make_container):
    """make_app(uid, version, script=LOOP, candidate=False, **kwargs): an app container as
    the agent names and labels them."""
    def make(uid, version, script=LOOP, candidate=False, **kwargs):
        name = f"pulseup-app-{uid}-v{version:04d}" + ("-candidate" if candidate else "")
        labels = app_labels(uid, version, **kwargs.pop("labels", {}))
        return make_container(name, labels, script, **kwargs)
    return make
