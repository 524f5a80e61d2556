"""HTTP routes of the dev control plane.

`/api/agent/*` are the agent's own endpoints (enroll: join token; renew and upload: mTLS;
`ca`: open); the update manifest is open too (signed public data the agent fetches without
any credential); everything else needs the admin bearer token (docs/devserver.md).
"""

import hmac
import json
import os
import re
import uuid


from agent.devserver import ca as calib
from agent.devserver import upload
from agent.devserver.hub import CallTimeout, NotConnected
from agent.devserver.http import (HttpError, Response, file_chunks, json_response, match_route,
                                  queued_or_keepalive)
from agent.devserver.store import TokenError

SSE_KEEPALIVE_S = 15.0
MAX_TIMEOUT_S = 3600.0

ROUTES = []


def route(method, pattern, auth="admin"):
    """Register a handler; `auth` is "admin", "mtls" or "open"."""
    def register(fn):
        ROUTES.append((method, re.compile("^" + pattern + r"\Z"), auth, fn))
        return fn
    return register


class Api:
    def __init__(self, server):
        self.server = server

    def handle(self, req):
        _method, _pattern, auth, fn = match_route(ROUTES, req)
        self._authorise(req, auth)
        return fn(self, req)

    def _authorise(self, req, auth):
        if auth == "admin":
            given = req.headers.get("authorization", "")
            expected = "Bearer " + self.server.admin_token
            if not hmac.compare_digest(given.encode(), expected.encode()):
                raise HttpError(401, "admin bearer token required")
        elif auth == "mtls":
            req.server_uid = self._client_identity(req)

    def _client_identity(self, req):
        if not req.peer_cert_der:
            raise HttpError(401, "client certificate required")
        cert = calib.load_der_cert(req.peer_cert_der)
        try:
            uid = self.server.ca.check_agent_cert(cert, self.server.store.is_revoked)
        except calib.CertError as e:
            raise HttpError(403, str(e)) from e
        req.peer_cert = cert
        return uid

    def _sign(self, csr_pem, server_uid):
        try:
            return self.server.ca.sign_agent_csr(csr_pem, server_uid, self.server.cert_lifetime)
        except calib.CertError as e:
            raise HttpError(400, str(e)) from e

    def _issue(self, csr_pem, server_uid):
        cert = self._sign(csr_pem, server_uid)
        meta = calib.cert_metadata(cert)
        self.server.store.record_certificate(server_uid, meta["serial_number"],
                                             meta["not_after"], meta["fingerprint"])
        return {"success": True, "server_uid": server_uid,
                "certificate_pem": calib.cert_pem(cert),
                "ca_certificate_pem": self.server.ca.pem,
                "renewal_endpoint": "/api/agent/renew", "renewal_threshold": 0.7,
                "certificate_metadata": meta}


# The agent's endpoints -------------------------------------------------------------------

@route("POST", "/api/agent/enroll", auth="open")
def enroll(api, req):
    body = req.json()
    token = body.get("join_token")
    store = api.server.store
    try:
        store.check_token(token if isinstance(token, str) else "")
        csr = body.get("csr_pem")
        if not isinstance(csr, str):
            raise HttpError(400, "csr_pem is required")
        calib.parse_csr(csr)
        store.consume_token(token)   # atomic: only one of two racing enrollments wins
    except TokenError as e:
        raise HttpError(401, str(e)) from e
    except calib.CertError as e:
        raise HttpError(400, str(e)) from e
    return json_response(api._issue(csr, "srv-" + uuid.uuid4().hex[:16]))


@route("POST", "/api/agent/renew", auth="mtls")
def renew(api, req):
    body = req.json()
    current = body.get("current_serial")
    if current is not None and str(current).lower() != calib.serial_hex(req.peer_cert):
        raise HttpError(400, "current_serial does not match the client certificate")
    csr = body.get("csr_pem")
    if not isinstance(csr, str):
        raise HttpError(400, "csr_pem is required")
    return json_response(api._issue(csr, req.server_uid))


@route("GET", "/api/agent/ca", auth="open")
def get_ca(api, req):
    return Response(200, api.server.ca.pem.encode(), content_type="application/x-pem-file")


@route("POST", "/api/agent/backups/upload", auth="mtls")
def upload_backup(api, req):
    directory = os.path.join(api.server.data_dir, "uploads", req.server_uid)
    try:
        result = upload.receive(req, directory)
    except upload.UploadError as e:
        raise HttpError(e.status, str(e)) from e
    return json_response(dict(result, success=True), 201)


@route("GET", "/api/update/manifest", auth="open")
def update_manifest(api, req):
    return _update_file(api, "manifest.json", "application/json")


@route("GET", "/api/update/manifest.sig", auth="open")
def update_signature(api, req):
    return _update_file(api, "manifest.json.sig", "text/plain")


@route("GET", "/api/update/files/(?P<name>[A-Za-z0-9][A-Za-z0-9_.+~-]*)", auth="open")
def update_asset(api, req):
    return _update_file(api, os.path.join("files", req.params["name"]),
                        "application/octet-stream")


def _update_file(api, name, content_type):
    path = os.path.join(api.server.data_dir, "update", name)
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise HttpError(404, "no such update file") from e
    return Response(200, content_type=content_type, stream=file_chunks(path),
                    headers=[("content-length", str(size))])


# Admin endpoints -------------------------------------------------------------------------

@route("POST", "/api/tokens")
def create_token(api, req):
    ttl = req.json().get("ttl_s", 3600)
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or ttl <= 0:
        raise HttpError(400, "ttl_s must be a positive number")
    token, expires_at = api.server.store.create_token(ttl)
    return json_response({"token": token, "expires_at": expires_at})


@route("GET", "/api/agents")
def list_agents(api, req):
    return json_response({"agents": api.server.agents()})


@route("POST", "/api/agents/(?P<uid>[^/]+)/calls")
def call_agent(api, req):
    body = req.json()
    event, call_id = body.get("event"), body.get("call_id")
    timeout = body.get("timeout_s", 30)
    if not isinstance(event, str) or not event:
        raise HttpError(400, "event is required")
    if call_id is not None and not isinstance(call_id, str):
        raise HttpError(400, "call_id must be a string")
    if not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT_S:
        raise HttpError(400, "timeout_s must be between 0 and %d" % MAX_TIMEOUT_S)
    try:
        reply = api.server.hub.call(req.params["uid"], event, body.get("data"), timeout, call_id)
    except NotConnected as e:
        raise HttpError(404, "agent not connected") from e
    except CallTimeout as e:
        raise HttpError(504, "no reply from the agent in time") from e
    return json_response(reply)


@route("POST", "/api/agents/(?P<uid>[^/]+)/cancel")
def cancel_call(api, req):
    call_id = req.json().get("call_id")
    if not isinstance(call_id, str):
        raise HttpError(400, "call_id is required")
    try:
        api.server.hub.cancel(req.params["uid"], call_id)
    except NotConnected as e:
        raise HttpError(404, "agent not connected") from e
    return json_response({"success": True})


@route("POST", "/api/agents/(?P<uid>[^/]+)/revoke")
def revoke(api, req):
    if not api.server.revoke(req.params["uid"]):
        raise HttpError(404, "unknown agent")
    return json_response({"success": True})


@route("PUT", "/api/agents/(?P<uid>[^/]+)/answers/(?P<event>[^/]+)")
def set_answer(api, req):
    reply = req.json()
    if not isinstance(reply.get("success"), bool):
        raise HttpError(400, "the reply needs a boolean success")
    try:
        api.server.set_answer(req.params["uid"], req.params["event"], reply)
    except ValueError as e:
        raise HttpError(400, str(e)) from e
    return json_response({"success": True})


@route("GET", "/api/agents/(?P<uid>[^/]+)/events")
def events(api, req):
    uid = req.params["uid"]
    queue = api.server.hub.subscribe(uid)
    return Response(200, content_type="text/event-stream", stream=_sse(api, uid, queue),
                    headers=[("cache-control", "no-cache")])


def _sse(api, uid, queue):
    try:
        yield b": subscribed\n\n"
        for item in queued_or_keepalive(queue, SSE_KEEPALIVE_S):
            if item is None:
                yield b": keep-alive\n\n"
                continue
            name, frame = item
            name = name.replace("\n", " ")
            yield ("event: %s\ndata: %s\n\n" % (name, json.dumps(frame))).encode()
    finally:
        api.server.hub.unsubscribe(uid, queue)
