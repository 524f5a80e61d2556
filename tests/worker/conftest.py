"""A devserver on a free port and an enrolled, running in-process worker."""

import gevent
import pytest

from agent.services.system import SystemService
from agent.worker.identity import enroll
from agent.worker.main import Worker
from tests.unit.fakes import make_config, test_registry


def agent_config(tmp_path, devserver, **overrides):
    values = dict(websocket_url=devserver.ws_url, enroll_ca_file=devserver.ca_file,
                  reconnect_interval=0.1, reconnect_backoff_max=0.5, ping_interval=1.0, ping_timeout=5.0,
                  agent_log_dir=str(tmp_path / "logs"))
    values.update(overrides)
    return make_config(tmp_path, **values)


class RunningWorker:
    def __init__(self, cfg, identity):
        self.cfg = cfg
        self.worker = Worker(cfg, identity, test_registry())
        self.greenlet = gevent.spawn(self.worker.run)

    def stop(self):
        if not self.greenlet.dead:
            self.worker.stopping.set()
            self.greenlet.join(timeout=15)
        self.greenlet.kill()


@pytest.fixture
def start_worker(tmp_path, devserver):
    started = []

    def start(cfg=None, **overrides):
        cfg = cfg or agent_config(tmp_path, devserver, **overrides)
        identity = enroll(cfg, devserver.create_token(), SystemService(cfg).hardware_info())
        running = RunningWorker(cfg, identity)
        started.append(running)
        return running, identity
    yield start
    for running in started:
        running.stop()
