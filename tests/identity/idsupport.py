"""Helpers of the identity tests (a module of its own: test modules import it by its package
path, never through the directory's conftest, whose name other directories share)."""

import json
import os

import websocket

from agent import __version__


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
