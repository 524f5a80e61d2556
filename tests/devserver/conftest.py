"""Fixtures for the dev server tests: a real DevServer on port 0 with real TLS.

The root conftest monkey-patches gevent first, so the blocking test clients
(requests, websocket-client) and the in-process server share the gevent hub.
"""

import pytest

from agent.devserver.server import DevServer
from devserver_client import TestAgent, enroll


@pytest.fixture
def server(tmp_path):
    srv = DevServer(str(tmp_path / "dev"), auth_timeout=5.0).start()
    yield srv
    srv.stop()


@pytest.fixture
def identity(server, tmp_path):
    return enroll(server, str(tmp_path / "certs"))


@pytest.fixture
def agent(server, identity):
    """An authenticated test agent connection."""
    client = TestAgent(server, identity)
    client.authenticate()
    yield client
    client.close()
