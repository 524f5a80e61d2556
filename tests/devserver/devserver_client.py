"""A small hand-written agent for the dev server tests: enrolls over HTTPS, connects with
websocket-client over TLS, answers the challenge, and can answer calls.

It deliberately does not use the project's worker code, so the dev server is tested against
the protocol text, not against the agent it will later test.
"""

import base64
import json
import os
import threading

import requests
import websocket
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID


def make_csr(key=None):
    """(key, csr_pem) for a fresh Ed25519 key, as an enrolling agent makes it (docs/protocol.md,
    "Enrollment and certificates")."""
    key = key or ed25519.Ed25519PrivateKey.generate()
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PulseUp"),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "PulseUp Agent"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "agent-test")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, None)
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


# Loopback only: ignore any proxy settings from the environment.
HTTP = requests.Session()
HTTP.trust_env = False


def admin(server):
    """A requests session carrying the admin token and trusting the dev CA."""
    session = requests.Session()
    session.trust_env = False
    session.verify = server.ca_file
    session.headers["Authorization"] = "Bearer " + server.admin_token
    return session


def post_enroll(server, token, csr_pem):
    return HTTP.post(server.url + "/api/agent/enroll", timeout=10, verify=server.ca_file,
                         json={"join_token": token, "csr_pem": csr_pem, "hardware_info": {}})


class Identity:
    """An enrolled agent's key and certificate, also written to files for TLS."""

    def __init__(self, key, reply, directory):
        self.key = key
        self.reply = reply
        self.server_uid = reply["server_uid"]
        self.cert_pem = reply["certificate_pem"]
        os.makedirs(directory, exist_ok=True)
        self.cert_file = os.path.join(directory, "agent.crt")
        self.key_file = os.path.join(directory, "agent.key")
        with open(self.cert_file, "w") as f:
            f.write(self.cert_pem)
        with open(self.key_file, "w") as f:
            f.write(key_pem(key))

    def sign(self, nonce):
        return base64.b64encode(self.key.sign(nonce.encode())).decode()


def enroll(server, directory, lifetime_token_ttl=3600):
    key, csr = make_csr()
    resp = post_enroll(server, server.create_token(lifetime_token_ttl), csr)
    assert resp.status_code == 200, resp.text
    return Identity(key, resp.json(), directory)


class TestAgent:
    """One WebSocket connection to the dev server."""

    __test__ = False   # not a pytest class

    def __init__(self, server, identity=None, tls_cert=True, timeout=10):
        sslopt = {"ca_certs": server.ca_file}
        if identity is not None and tls_cert:
            sslopt.update(certfile=identity.cert_file, keyfile=identity.key_file)
        self.identity = identity
        self.ws = websocket.create_connection(server.ws_url, sslopt=sslopt, timeout=timeout,
                                              skip_utf8_validation=True)
        self._stop = False
        self._thread = None

    def send(self, frame):
        self.ws.send(json.dumps(frame))

    def recv(self):
        return json.loads(self.ws.recv())

    def challenge(self):
        frame = self.recv()
        assert frame["type"] == "auth_challenge", frame
        return frame["data"]["nonce"]

    def proof(self, nonce, signature=None, certificate=None, signed_nonce=None):
        """Send an auth_proof; by default a correct one for `nonce`."""
        self.send({"type": "auth_proof", "data": {
            "method": "mtls", "nonce": nonce, "version": "9.9.9",
            "certificate": self.identity.cert_pem if certificate is None else certificate,
            "signature": signature or self.identity.sign(signed_nonce or nonce)}})
        return self.recv()

    def authenticate(self):
        """Full challenge/proof; returns the server_uid (asserts success)."""
        reply = self.proof(self.challenge())
        assert reply["type"] == "auth_response" and reply["data"]["success"], reply
        connected = self.recv()
        assert connected["type"] == "connected", connected
        return reply["data"]["server_uid"]

    def serve(self, handler):
        """Answer calls in a background thread with `handler(frame) -> reply data`."""
        def loop():
            while not self._stop:
                try:
                    frame = self.recv()
                except (websocket.WebSocketException, OSError, ValueError):
                    return
                if frame.get("type") == "call":
                    self.send({"type": "response", "call_id": frame["call_id"],
                               "data": handler(frame)})
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def close(self):
        self._stop = True
        try:
            self.ws.close(timeout=1)
        except (websocket.WebSocketException, OSError):
            pass
