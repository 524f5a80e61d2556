"""Fixtures for the identity tests: a real DevServer on port 0 with real TLS.

The root conftest patches gevent first, so the agent's blocking HTTP and
websocket-client code share the hub with the in-process server.
"""

import json
import os

import pytest
import websocket

from agent import __version__, config
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


def cert_dir_entries(cfg):
    """What is in CERT_DIR (an absent directory counts as empty)."""
    return sorted(os.listdir(cfg.cert_dir)) if os.path.isdir(cfg.cert_dir) else []


def authenticate(server, identity):
    """Run the authentication challenge (docs/protocol.md, "Connection") with the identity's TLS context and signature;
    returns the auth_response data."""
    ws = websocket.create_connection(server.ws_url, sslopt={"context": identity.ssl_context()}, timeout=10)
    try:
        challenge = json.loads(ws.recv())
        assert challenge["type"] == "auth_challenge"
        nonce = challenge["data"]["nonce"]
        ws.send(json.dumps({"type": "auth_proof", "data": {
            "method": "mtls", "certificate": identity.cert_pem, "signature": identity.sign(nonce),
            "nonce": nonce, "version": __version__}}))
        reply = json.loads(ws.recv())
        assert reply["type"] == "auth_response", reply
        return reply["data"]
    finally:
        ws.close()
