"""Enrollment, renewal, admin token, CA pin, persistence (docs/protocol.md, "Enrollment and certificates";
docs/devserver.md, "HTTP API")."""

import hashlib
import json
import os
import stat
import time

import pytest
import urllib3  # noqa: F401  (named in filterwarnings)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from agent.devserver.server import DevServer
from devserver_client import HTTP, TestAgent, admin, make_csr, post_enroll


def test_enroll_response_shape(server):
    key, csr = make_csr()
    resp = post_enroll(server, server.create_token(), csr)
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"success", "server_uid", "certificate_pem", "ca_certificate_pem",
                         "renewal_endpoint", "renewal_threshold", "certificate_metadata"}
    assert body["success"] is True and body["renewal_endpoint"] == "/api/agent/renew"
    assert body["renewal_threshold"] == 0.7 and body["ca_certificate_pem"] == server.ca_pem
    meta = body["certificate_metadata"]
    assert set(meta) == {"serial_number", "not_before", "not_after", "fingerprint"}
    cert = x509.load_pem_x509_certificate(body["certificate_pem"].encode())
    ca = x509.load_pem_x509_certificate(server.ca_pem.encode())
    cert.verify_directly_issued_by(ca)
    assert cert.public_key() == key.public_key()
    assert format(cert.serial_number, "x") == meta["serial_number"]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 86400 <= lifetime.total_seconds() <= 86400 + 120


def test_token_is_one_time(server):
    token = server.create_token()
    assert post_enroll(server, token, make_csr()[1]).status_code == 200
    resp = post_enroll(server, token, make_csr()[1])
    assert resp.status_code == 401
    assert resp.json() == {"success": False, "error": "Invalid or used token"}


def test_unknown_token(server):
    resp = post_enroll(server, "nope", make_csr()[1])
    assert resp.json()["error"] == "Invalid or used token"


def test_expired_token(server):
    token = server.create_token(ttl_s=0.2)
    time.sleep(0.3)
    resp = post_enroll(server, token, make_csr()[1])
    assert resp.status_code == 401 and resp.json()["error"] == "Token expired"


def test_bad_csr_does_not_burn_the_token(server):
    token = server.create_token()
    resp = post_enroll(server, token, "-----BEGIN CERTIFICATE REQUEST-----\nxx\n")
    assert resp.status_code == 400 and resp.json()["success"] is False
    assert post_enroll(server, token, make_csr()[1]).status_code == 200


def test_csr_with_a_non_ed25519_key_is_refused(server):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(
        key, hashes.SHA256())
    pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    resp = post_enroll(server, server.create_token(), pem)
    assert resp.status_code == 400 and "Ed25519" in resp.json()["error"]


def test_csr_with_a_bad_signature_is_refused(server):
    _, good = make_csr()
    csr = x509.load_pem_x509_csr(good.encode())
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0xFF   # flip a bit of the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    resp = post_enroll(server, server.create_token(), tampered.decode())
    assert resp.status_code == 400 and "signature" in resp.json()["error"]


def test_tokens_are_stored_hashed(server):
    token = server.create_token()
    with open(os.path.join(server.data_dir, "tokens.json")) as f:
        stored = json.load(f)
    assert token not in json.dumps(stored)
    assert hashlib.sha256(token.encode()).hexdigest() in stored


def test_file_modes(server):
    assert stat.S_IMODE(os.stat(server.data_dir).st_mode) == 0o700
    for name in ("ca.key", "server.key", "admin.token", "tokens.json"):
        server.create_token()
        assert stat.S_IMODE(os.stat(os.path.join(server.data_dir, name)).st_mode) == 0o600


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_ca_pin_matches_the_spki_and_the_open_endpoint(server):
    pem = HTTP.get(server.url + "/api/agent/ca", verify=False, timeout=5).text
    ca = x509.load_pem_x509_certificate(pem.encode())
    spki = ca.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    assert server.ca_pin == "sha256:" + hashlib.sha256(spki).hexdigest()
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)


def test_admin_endpoints_need_the_token(server):
    for method, path in [("POST", "/api/tokens"), ("GET", "/api/agents"),
                         ("POST", "/api/agents/x/calls"), ("GET", "/api/agents/x/events"),
                         ("POST", "/api/agents/x/revoke"), ("PUT", "/api/agents/x/answers/y")]:
        resp = HTTP.request(method, server.url + path, verify=server.ca_file, timeout=5,
                                headers={"Authorization": "Bearer wrong"})
        assert resp.status_code == 401, path
    resp = admin(server).post(server.url + "/api/tokens", json={"ttl_s": 60})
    assert resp.status_code == 200
    assert resp.json()["expires_at"] == pytest.approx(time.time() + 60, abs=5)


def _renew(server, identity, serial, cert=True):
    _, csr = make_csr(ed25519.Ed25519PrivateKey.generate())
    return HTTP.post(server.url + "/api/agent/renew", verify=server.ca_file, timeout=10,
                         cert=(identity.cert_file, identity.key_file) if cert else None,
                         json={"csr_pem": csr, "current_serial": serial})


def test_renew_over_mtls_keeps_the_identity(server, identity):
    serial = identity.reply["certificate_metadata"]["serial_number"]
    resp = _renew(server, identity, serial)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["server_uid"] == identity.server_uid
    assert body["certificate_metadata"]["serial_number"] != serial
    listed = admin(server).get(server.url + "/api/agents").json()["agents"]
    assert listed[0]["serial"] == body["certificate_metadata"]["serial_number"]


def test_renew_needs_a_client_certificate(server, identity):
    assert _renew(server, identity, "1", cert=False).status_code == 401


def test_renew_checks_the_current_serial(server, identity):
    assert _renew(server, identity, "abc").status_code == 400


def test_renew_refused_when_revoked(server, identity):
    server.revoke(identity.server_uid)
    serial = identity.reply["certificate_metadata"]["serial_number"]
    resp = _renew(server, identity, serial)
    assert resp.status_code == 403 and resp.json()["error"] == "Certificate revoked"


def test_restart_keeps_ca_agents_and_revocations(tmp_path, identity, server):
    server.revoke(identity.server_uid)
    pin, data_dir = server.ca_pin, server.data_dir
    server.stop()
    again = DevServer(data_dir).start()
    try:
        assert again.ca_pin == pin
        agents = again.agents()
        assert [a["server_uid"] for a in agents] == [identity.server_uid]
        assert agents[0]["revoked"] is True
        client = TestAgent(again, identity)
        assert client.proof(client.challenge())["data"]["error"] == "Certificate revoked"
    finally:
        again.stop()


def test_racing_enrollments_with_one_token(server):
    import gevent
    token = server.create_token()
    jobs = [gevent.spawn(post_enroll, server, token, make_csr()[1]) for _ in range(5)]
    codes = sorted(job.get(timeout=10).status_code for job in jobs)
    assert codes == [200, 401, 401, 401, 401]


def test_bad_websocket_upgrade_is_refused(server):
    resp = HTTP.get(server.url + "/ws/agent_v2", verify=server.ca_file,
                    headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    assert resp.status_code == 400
