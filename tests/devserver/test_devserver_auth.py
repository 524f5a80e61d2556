"""Challenge authentication over the WebSocket (docs/protocol.md, "Connection"; docs/devserver.md,
"WebSocket `/ws/agent_v2`")."""

import base64
import time

import pytest
import websocket
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.devserver.server import DevServer
from devserver_client import TestAgent, enroll


def refused(reply, error):
    assert reply["type"] == "auth_response", reply
    assert reply["data"] == {"success": False, "error": error}


def assert_closed(client):
    with pytest.raises((websocket.WebSocketException, OSError)):
        for _ in range(3):
            client.ws.recv()


def test_success_sends_auth_response_then_connected(server, identity):
    client = TestAgent(server, identity)
    nonce = client.challenge()
    assert len(nonce) >= 32 and nonce.isascii() and nonce.isprintable()
    reply = client.proof(nonce)
    assert reply["data"] == {"success": True, "server_uid": identity.server_uid}
    assert client.recv() == {"type": "connected", "data": {"server_uid": identity.server_uid}}
    assert server.wait_connected(identity.server_uid, timeout=5) == identity.server_uid
    client.close()


def test_each_connection_gets_a_fresh_nonce(server, identity):
    first, second = TestAgent(server, identity), TestAgent(server, identity)
    assert first.challenge() != second.challenge()
    first.close()
    second.close()


def test_bad_signature(server, identity):
    client = TestAgent(server, identity)
    nonce = client.challenge()
    other = ed25519.Ed25519PrivateKey.generate()
    bad = base64.b64encode(other.sign(nonce.encode())).decode()
    refused(client.proof(nonce, signature=bad), "Invalid signature")
    assert_closed(client)


def test_signature_that_is_not_base64(server, identity):
    client = TestAgent(server, identity)
    refused(client.proof(client.challenge(), signature="%%%"), "Invalid signature")


def test_wrong_nonce(server, identity):
    client = TestAgent(server, identity)
    client.challenge()
    refused(client.proof("x" * 43), "Invalid or reused nonce")


def test_nonce_replayed_on_another_connection(server, identity):
    first = TestAgent(server, identity)
    old_nonce = first.challenge()
    first.close()
    second = TestAgent(server, identity)
    second.challenge()
    refused(second.proof(old_nonce), "Invalid or reused nonce")


def test_signature_over_another_nonce(server, identity):
    client = TestAgent(server, identity)
    nonce = client.challenge()
    refused(client.proof(nonce, signed_nonce=nonce + "x"), "Invalid signature")


def test_stale_nonce(server, identity, monkeypatch):
    from agent.devserver import session
    monkeypatch.setattr(session, "NONCE_MAX_AGE", 0.2)
    client = TestAgent(server, identity)
    nonce = client.challenge()
    time.sleep(0.4)
    refused(client.proof(nonce), "Invalid or reused nonce")


def test_expired_certificate(server, tmp_path):
    server.cert_lifetime = 1
    ident = enroll(server, str(tmp_path / "short"))
    time.sleep(2.2)
    # The TLS layer lets the expired certificate through so the answer is explicit.
    client = TestAgent(server, ident)
    refused(client.proof(client.challenge()), "Certificate expired")


def test_revoked_certificate(server, identity):
    assert server.revoke(identity.server_uid)
    client = TestAgent(server, identity)
    refused(client.proof(client.challenge()), "Certificate revoked")


def test_revoke_closes_the_live_connection(server, agent, identity):
    server.revoke(identity.server_uid)
    assert_closed(agent)
    assert server.agents()[0]["revoked"] is True


def test_unknown_certificate_authority(server, tmp_path):
    other = DevServer(str(tmp_path / "other")).start()
    try:
        foreign = enroll(other, str(tmp_path / "foreign"))
    finally:
        other.stop()
    # No TLS client certificate (the handshake would refuse a foreign one); proof only.
    client = TestAgent(server, foreign, tls_cert=False)
    refused(client.proof(client.challenge()), "Unknown certificate authority")


def test_proof_certificate_must_match_the_tls_certificate(server, identity, tmp_path):
    second = enroll(server, str(tmp_path / "second"))
    client = TestAgent(server, identity)
    nonce = client.challenge()
    reply = client.proof(nonce, certificate=second.cert_pem)
    assert reply["data"]["success"] is False


def test_tls_certificate_alone_is_enough(server, identity):
    client = TestAgent(server, identity)
    reply = client.proof(client.challenge(), certificate="")
    assert reply["data"]["success"] is True


def test_proof_without_any_certificate(server, identity):
    client = TestAgent(server, identity, tls_cert=False)
    refused(client.proof(client.challenge(), certificate=""), "Certificate required")


def test_authentication_timeout(server, identity):
    server.auth_timeout = 0.3
    client = TestAgent(server, identity)
    client.challenge()
    started = time.monotonic()
    refused(client.recv(), "Authentication timeout")
    assert time.monotonic() - started < 3.0
    assert_closed(client)


def test_calls_before_authentication_get_an_error(server, identity):
    client = TestAgent(server, identity)
    nonce = client.challenge()
    client.send({"type": "call", "call_id": "c1", "event": "x", "data": {}})
    assert client.recv()["data"]["code"] == "unauthenticated"
    assert client.proof(nonce)["data"]["success"] is True


def test_new_connection_replaces_the_old_one(server, identity):
    first = TestAgent(server, identity)
    first.authenticate()
    second = TestAgent(server, identity)
    second.authenticate()
    assert_closed(first)
    agents = server.agents()
    assert len(agents) == 1 and agents[0]["connected"] is True
    second.close()
