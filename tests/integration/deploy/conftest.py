"""An agent with the deploy commands, run through the real dispatcher against the test dockerd
and the token git server."""
import itertools
import os

import docker.errors
import gevent
import pytest

from agent import config
from agent.handlers import build_registry
from agent.handlers import deploy as deploy_handlers
from agent.protocol import envelope
from agent.services import Services
from agent.services.deploy import gate, swap
from agent.worker.dispatcher import Dispatcher
from agent.worker.outbox import CallLog, Outbox


class DeployAgent:
    """A dispatcher wired to an in-memory connection: ``call()`` waits for the reply, every
    event lands in ``events``; ``env_vars`` answers the agent's get_service_env_vars call."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.events = []
        self.server_calls = []
        self.env_vars = {}
        self.outbox = Outbox(cfg.state_dir)
        self.services = Services(cfg)
        # service.delete (another module) closes the loop: delete what the deploys made
        registry = build_registry(modules=("agent.handlers.lifecycle",))
        deploy_handlers.register(registry)
        self.dispatcher = Dispatcher(cfg, registry, self.services, self.outbox, CallLog(cfg.state_dir),
                                     self._direct, self._call_server)
        self.services.events.target = lambda event, data, durable: self.events.append((event, data))
        self._ids = itertools.count(1)

    def _direct(self, frame, droppable=False):
        if frame.get("type") == "event":
            self.events.append((frame["event"], frame["data"]))

    def _call_server(self, event, data, timeout):
        self.server_calls.append((event, data))
        if event == "get_service_env_vars":
            return dict(self.env_vars)
        return {"error": "not configured in this test"}

    def _drain(self, replies):
        while (head := self.outbox.peek()) is not None:
            frame = envelope.decode(head[1]).raw
            self.outbox.ack(head[0])
            if frame["type"] == "response":
                replies[frame["call_id"]] = frame["data"]
            else:
                self.events.append((frame["event"], frame["data"]))

    def call(self, event, data, timeout=120):
        """The reply's data object ({success, data, error, code})."""
        call_id = f"c-{next(self._ids)}"
        replies = {}
        self.dispatcher.handle(envelope.decode(envelope.encode(
            {"type": "call", "call_id": call_id, "event": event, "data": data})))
        with gevent.Timeout(timeout):
            while call_id not in replies:
                self._drain(replies)
                gevent.sleep(0.02)
        return replies[call_id]

    def events_named(self, name):
        self._drain({})
        return [data for event, data in self.events if event == name]

    def close(self):
        self.services.close()


@pytest.fixture
def deploy_cfg(tmp_path, docker_host, git_server):
    return config.defaults().replace(
        state_dir=str(tmp_path / "state"), cert_dir=str(tmp_path / "certs"), docker_host=docker_host,
        apps_dir=str(tmp_path / "apps"), deployment_dir=str(tmp_path / "deployments"),
        deployment_log_dir=str(tmp_path / "logs"), allow_insecure_transport=True,
        pulseup_git_allowed_hosts=(f"127.0.0.1:{git_server.port}",))


@pytest.fixture
def deploy_agent(deploy_cfg, docker_client, app_base_image, test_network):
    os.makedirs(deploy_cfg.state_dir, exist_ok=True)
    agent = DeployAgent(deploy_cfg)
    # probe faster than the 1 s of production so the suite stays short
    # and stop with a short grace: busybox httpd as PID 1 ignores SIGTERM
    interval, gate.ReadinessGate.probe_interval = gate.ReadinessGate.probe_interval, 0.25
    grace, swap.Swap.stop_grace = swap.Swap.stop_grace, 1
    try:
        yield agent
    finally:
        gate.ReadinessGate.probe_interval = interval
        swap.Swap.stop_grace = grace
        agent.close()


@pytest.fixture
def cleanup_service(docker_client):
    """Remove every container labelled with the uids a test used, and their images."""
    uids = []
    yield uids.append
    for uid in uids:
        for container in docker_client.containers.list(all=True, filters={"label": f"pulseup.service_uid={uid}"}):
            container.remove(force=True)
        for image in docker_client.images.list(name=f"pulseup-app-{uid}"):
            for tag in image.tags:
                docker_client.images.remove(tag, force=True)
        try:
            docker_client.images.remove(f"pulseup-app:{uid}", force=True)
        except docker.errors.ImageNotFound:
            pass
