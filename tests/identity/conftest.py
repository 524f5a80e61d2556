"""Fixtures for the identity tests: a real DevServer on port 0 with real TLS.

The root conftest patches gevent first, so the agent's blocking HTTP and
websocket-client code share the hub with the in-process server.
"""

import pytest

from agent import config
from agent.devserver.server import DevServer
from agent.services.system import SystemService


@pytest.fixture
def server(tmp_path):
    srv = DevServer(str(tmp_path / "dev"), auth_timeout=5.0).start()
    yield srv
    srv.stop()


@pytest.fixture
def cfg(server, tmp_path):
    return config.defaults().replace(cert_dir=str(tmp_path / "certs"), websocket_url=server.ws_url,
                                     enroll_ca_pin=server.ca_pin)


@pytest.fixture(scope="session")
def hardware_info():
    return SystemService(config.defaults()).hardware_info()
