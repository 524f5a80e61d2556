"""One agent's WebSocket session: challenge authentication (docs/protocol.md, "Connection"), then the
reader loop that records frames, resolves calls and answers the agent's own calls.

The session runs in the greenlet that accepted the connection; it is the only reader.
"""

import base64
import binascii
import json
import logging
import secrets
import time

import gevent

from agent.devserver import ca as calib
from agent.devserver.ws import CLOSE_POLICY, Closed

log = logging.getLogger(__name__)

NONCE_MAX_AGE = 60.0


class AuthFailed(Exception):
    """Authentication refused; the message is the `auth_response` error text."""


class AgentConnection:
    """What the hub needs from a connection: send a frame, close it, or drop it abruptly."""

    def __init__(self, ws, peer_der):
        self.ws = ws
        self.peer_der = peer_der

    def send(self, frame):
        self.ws.send_json(frame)

    def close(self, code=1000, reason=""):
        self.ws.close(code, reason)

    def abort(self):
        self.ws.abort()


class AgentSession:
    def __init__(self, server, conn):
        self.server = server          # the DevServer: ca, store, hub, timeouts
        self.conn = conn
        self.nonce = secrets.token_urlsafe(32)
        self.nonce_issued = time.monotonic()
        self.nonce_used = False

    def run(self):
        try:
            uid, version = self._authenticate()
        except AuthFailed as e:
            self._refuse(str(e))
            return
        except Closed:
            return
        hub = self.server.hub
        hub.attach(uid, self.conn, version)
        try:
            self.conn.send({"type": "auth_response", "data": {"success": True, "server_uid": uid}})
            self.conn.send({"type": "connected", "data": {"server_uid": uid}})
            self._read_loop(hub.state(uid))
        except Closed as e:
            log.info("agent %s disconnected: %s", uid, e)
        finally:
            hub.detach(uid, self.conn)
            self.conn.close()

    def _refuse(self, error):
        log.info("agent authentication refused: %s", error)
        try:
            self.conn.send({"type": "auth_response", "data": {"success": False, "error": error}})
        except Closed:
            pass
        self.conn.close(CLOSE_POLICY, error)

    # Authentication ----------------------------------------------------------------------

    def _authenticate(self):
        self.conn.send({"type": "auth_challenge", "data": {"nonce": self.nonce}})
        try:
            with gevent.Timeout(self.server.auth_timeout):
                proof = self._wait_for_proof()
        except gevent.Timeout as e:
            raise AuthFailed("Authentication timeout") from e
        return self._verify(proof), str(proof.get("version") or "")

    def _wait_for_proof(self):
        while True:
            frame = _decode(self.conn.ws.recv_text())
            if frame is None:
                continue
            kind = frame.get("type")
            if kind == "auth_proof":
                data = frame.get("data")
                return data if isinstance(data, dict) else {}
            if kind in ("call", "event"):
                self.conn.send({"type": "error", "data": {
                    "code": "unauthenticated", "message": "authenticate first"}})

    def _verify(self, proof):
        cert = self._proof_certificate(proof)
        uid = self._check_cert(cert)
        self._check_nonce(proof.get("nonce"))
        signature = _b64(proof.get("signature"))
        if signature is None or not calib.verify_ed25519(cert, signature, self.nonce.encode()):
            raise AuthFailed("Invalid signature")
        return uid

    def _proof_certificate(self, proof):
        """The certificate of the proof and/or of the TLS handshake; both must agree."""
        pem = proof.get("certificate")
        cert = None
        if isinstance(pem, str) and pem.strip():
            try:
                cert = calib.load_pem_cert(pem)
            except calib.CertError as e:
                raise AuthFailed("Invalid certificate") from e
        peer = calib.load_der_cert(self.conn.peer_der) if self.conn.peer_der else None
        if cert is not None and peer is not None and cert != peer:
            raise AuthFailed("Certificate does not match the TLS client certificate")
        if cert is None and peer is None:
            raise AuthFailed("Certificate required")
        return cert or peer

    def _check_cert(self, cert):
        try:
            return self.server.ca.check_agent_cert(cert, self.server.store.is_revoked)
        except calib.CertError as e:
            raise AuthFailed(str(e)) from e

    def _check_nonce(self, nonce):
        fresh = time.monotonic() - self.nonce_issued < NONCE_MAX_AGE
        if nonce != self.nonce or self.nonce_used or not fresh:
            raise AuthFailed("Invalid or reused nonce")
        self.nonce_used = True

    # After authentication ----------------------------------------------------------------

    def _read_loop(self, st):
        while True:
            text = self.conn.ws.recv_text()
            frame = _decode(text)
            if frame is None:
                self.conn.send({"type": "error", "data": {
                    "code": "invalid_message", "message": "frame is not a JSON object with a type"}})
                continue
            self.server.hub.on_frame(st, frame)
            self._answer(st, frame)

    def _answer(self, st, frame):
        kind = frame.get("type")
        if kind == "ping":
            self.conn.send({"type": "pong", "data": frame.get("data")})
        elif kind == "call":
            reply = self.server.hub.answer_for(st, frame.get("event"))
            self.conn.send({"type": "response", "call_id": frame.get("call_id"), **reply})
        elif kind == "error":
            log.warning("agent %s sent an error frame: %s", st.server_uid, frame.get("data"))


def _decode(text):
    """A JSON object with a string `type`, or None (never raises)."""
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        return None
    return frame


def _b64(value):
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
