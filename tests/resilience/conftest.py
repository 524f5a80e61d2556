"""Fixtures of the resilience suite: a devserver, an enrolled in-process worker (the pattern
of tests/worker/conftest.py) whose WEBSOCKET_URL may go through a TcpProxy, and a registry
with a counting sleep command (registered in-process, never shipped: docs/design.md, "Testing privileged operations")."""

import collections

import gevent
import pytest

from agent.protocol.fields import RequestSchema, StrictNumber
from agent.worker.identity import enroll
from agent.worker.main import Worker
from tests.resilience.tcpproxy import TcpProxy
from tests.unit.fakes import test_registry
from tests.worker.conftest import agent_config


class _CountRequest(RequestSchema):
    seconds = StrictNumber(load_default=0.0)


class CountingRegistry:
    """``test.count_sleep`` sleeps and counts how often each call_id really ran."""

    def __init__(self):
        self.runs = collections.Counter()
        self.registry = test_registry()
        self.registry.add("test.count_sleep", self._run, _CountRequest())

    def _run(self, ctx, request):
        self.runs[ctx.call_id] += 1
        gevent.sleep(request["seconds"])
        return {"slept": request["seconds"]}


@pytest.fixture
def proxy(devserver):
    proxy = TcpProxy(devserver.port).start()
    yield proxy
    proxy.stop()


class Agent:
    """An enrolled worker running in this process."""

    def __init__(self, cfg, identity, commands):
        self.cfg, self.uid, self.commands = cfg, identity.server_uid, commands
        self.worker = Worker(cfg, identity, commands.registry)
        self.greenlet = gevent.spawn(self.worker.run)

    def stop(self):
        if not self.greenlet.dead:
            self.worker.stopping.set()
            self.greenlet.join(timeout=15)
        self.greenlet.kill()

    def wait_reconnects(self, count, timeout=20):
        with gevent.Timeout(timeout):
            while self.worker.link.reconnects < count or not self.worker.link.connected.is_set():
                gevent.sleep(0.05)


@pytest.fixture
def start_agent(tmp_path, devserver):
    started = []

    def start(via=None, url=None, **overrides):
        """Enroll directly, then run the worker against ``via`` (a TcpProxy), ``url`` (then
        without waiting for the devserver to see it) or the devserver."""
        cfg = agent_config(tmp_path, devserver, **overrides)
        identity = enroll(cfg, devserver.create_token(), {"hostname": "resilience"})
        if via is not None:
            url = f"wss://127.0.0.1:{via.port}/ws/agent_v2"
        agent = Agent(cfg.replace(websocket_url=url or cfg.websocket_url), identity, CountingRegistry())
        started.append(agent)
        if url is None or via is not None:
            assert devserver.wait_connected(agent.uid, timeout=15) == agent.uid
        return agent
    yield start
    for agent in started:
        agent.stop()
