"""`DevServer`: the development control plane, usable in-process by tests or from the CLI.

One TLS port serves the HTTPS API and the agent WebSocket (`/ws/agent_v2`). Client
certificates are requested but optional at TLS level and enforced per path (docs/devserver.md).
Every connection runs in a greenlet owned by `self._group`.
"""

import logging
import os
import secrets
import socket

import gevent
import gevent.pool
import gevent.server
from gevent import ssl

from agent.devserver.api import Api
from agent.devserver.ca import CertificateAuthority
from agent.devserver.console import Console, is_console_path
from agent.devserver.http import HttpConnection
from agent.devserver.hub import ANSWERABLE, CallTimeout, Hub, NotConnected
from agent.devserver.session import AgentConnection, AgentSession
from agent.devserver.store import Store, atomic_write, ensure_private_dir
from agent.devserver.ws import Closed, WebSocket

__all__ = ["DevServer", "CallTimeout", "NotConnected", "parse_listen"]

log = logging.getLogger(__name__)

WS_PATH = "/ws/agent_v2"
HANDSHAKE_TIMEOUT = 10.0
MAX_CONNECTIONS = 10000
# OpenSSL's X509_V_FLAG_NO_CHECK_TIME: let expired client certificates through the TLS
# handshake so the agent gets the documented "Certificate expired" answer (and can
# re-enroll) instead of an opaque TLS alert; validity is checked per request instead.
X509_V_FLAG_NO_CHECK_TIME = 0x200000


def parse_listen(listen):
    """'HOST:PORT' (or '[v6]:PORT') -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError("--listen must be HOST:PORT, not %r" % listen)
    return host.strip("[]") or "127.0.0.1", int(port)


class DevServer:
    def __init__(self, data_dir, listen="127.0.0.1:0", cert_lifetime=86400, auth_timeout=30.0,
                 idle_timeout=300.0, max_message_bytes=16 * 1024 * 1024):
        self.data_dir = os.path.abspath(data_dir)
        ensure_private_dir(self.data_dir)
        self.host, self.port = parse_listen(listen)
        self.cert_lifetime = cert_lifetime
        self.auth_timeout = auth_timeout
        self.idle_timeout = idle_timeout
        self.max_message_bytes = max_message_bytes
        self.ca = CertificateAuthority(self.data_dir)
        self.store = Store(self.data_dir)
        self.hub = Hub()
        self.admin_token = self._admin_token()
        self._api = Api(self)
        self.console = Console(self)
        self._group = gevent.pool.Pool(MAX_CONNECTIONS)
        self._server = None

    def _admin_token(self):
        path = os.path.join(self.data_dir, "admin.token")
        if not os.path.exists(path):
            atomic_write(path, secrets.token_urlsafe(32).encode() + b"\n", 0o600)
        with open(path) as f:
            return f.read().strip()

    # Life cycle --------------------------------------------------------------------------

    def start(self):
        """Bind and serve in the background; with port 0 a free port is chosen."""
        cert_file, key_file = self.ca.ensure_server_cert(self.host)
        self._ssl = self._ssl_context(cert_file, key_file)
        self._server = gevent.server.StreamServer((self.host, self.port), self._handle,
                                                  backlog=1024, spawn=self._group)
        self._server.start()
        self.port = self._server.server_port
        log.info("devserver listening on %s", self.url)
        return self

    def _ssl_context(self, cert_file, key_file):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert_file, key_file)
        ctx.load_verify_locations(cafile=self.ca.ca_file)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.verify_flags |= X509_V_FLAG_NO_CHECK_TIME
        return ctx

    def stop(self, timeout=0.0):
        """Stop accepting, close every agent connection (close frame 1001, written at once),
        wait up to `timeout` s for the other connections (keep-alive, SSE), kill the rest."""
        if self._server is None:
            return
        self._server.close()
        for st in self.hub.all_states():
            if st.conn is not None:
                st.conn.close(1001, "server shutting down")
        self._server.stop(timeout=timeout)
        self._server = None
        self.console.close()

    def serve_forever(self):
        self._server.serve_forever()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # Connections -------------------------------------------------------------------------

    def _handle(self, sock, address):
        sock.settimeout(HANDSHAKE_TIMEOUT)
        # Small frames (calls, auth) must not wait for delayed ACKs.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self._ssl.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError) as e:
            log.info("TLS handshake with %s failed: %s", address[0], e)
            sock.close()
            return
        try:
            tls.settimeout(self.idle_timeout)
            HttpConnection(tls, self._route, self._upgrade).serve()
        except Exception:  # a connection's entry point: log, never take the server down
            log.exception("connection from %s failed", address[0])
        finally:
            tls.close()

    def _route(self, req):
        """The web console (docs/devserver.md, "Web console") or the HTTP API."""
        return (self.console if is_console_path(req.path) else self._api).handle(req)

    def _upgrade(self, req, sock, trailing):
        if req.path != WS_PATH:
            sock.sendall(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n"
                         b"connection: close\r\n\r\n")
            return
        ws = WebSocket(sock, self.max_message_bytes)
        try:
            ws.accept(req, trailing)
        except Closed:
            return
        AgentSession(self, AgentConnection(ws, req.peer_cert_der)).run()

    # Addresses and trust -----------------------------------------------------------------

    @property
    def url(self):
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = "[%s]" % host if ":" in host else host
        return "https://%s:%d" % (host, self.port)

    @property
    def ws_url(self):
        return "wss" + self.url[len("https"):] + WS_PATH

    @property
    def ca_pem(self):
        return self.ca.pem

    @property
    def ca_pin(self):
        return self.ca.pin

    @property
    def ca_file(self):
        return self.ca.ca_file

    # Python API for tests ----------------------------------------------------------------

    def create_token(self, ttl_s=3600):
        return self.store.create_token(ttl_s)[0]

    def call(self, server_uid, event, data=None, timeout=30, call_id=None):
        """Send a call and return the reply object; raises NotConnected or CallTimeout."""
        return self.hub.call(server_uid, event, data, timeout, call_id)

    def cancel(self, server_uid, call_id):
        self.hub.cancel(server_uid, call_id)

    def agents(self):
        """Enrolled and/or connected agents, with certificate and connection details."""
        uids = {a["server_uid"] for a in self.store.agents()}
        uids |= {st.server_uid for st in self.hub.all_states()}
        return [self._agent_summary(uid) for uid in sorted(uids)]

    def _agent_summary(self, uid):
        st = self.hub.known(uid)
        summary = st.summary() if st else {"server_uid": uid, "connected": False,
                                           "authenticated_at": None, "version": None,
                                           "hardware_info": None, "duplicate_responses": 0}
        record = self.store.agent(uid) or {}
        summary.update(serial=record.get("serial"), not_after=record.get("not_after"),
                       enrolled_at=record.get("enrolled_at"),
                       revoked=bool(record.get("revoked")))
        return summary

    def revoke(self, server_uid):
        """Revoke the agent's certificates and close its connection; False if unknown."""
        if not self.store.revoke(server_uid):
            return False
        st = self.hub.known(server_uid)
        if st is not None and st.conn is not None:
            st.conn.close(1008, "Certificate revoked")
        return True

    def drop_connection(self, server_uid):
        """Abruptly close the agent's socket (as a crashed server would); False if none."""
        st = self.hub.known(server_uid)
        if st is None or st.conn is None:
            return False
        st.conn.abort()
        return True

    def received_frames(self, server_uid):
        st = self.hub.known(server_uid)
        return list(st.frames) if st else []

    def wait_connected(self, server_uid=None, timeout=10):
        return self.hub.wait_connected(server_uid, timeout)

    def set_answer(self, server_uid, event, reply):
        """Set what the server answers to the agent's call `event` (docs/commands.md, "Agent -> server calls")."""
        if event not in ANSWERABLE:
            raise ValueError("only %s can be configured" % ", ".join(ANSWERABLE))
        self.hub.state(server_uid).answers[event] = {
            "success": bool(reply.get("success")), "data": reply.get("data"),
            "error": reply.get("error") or ""}
