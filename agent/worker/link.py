"""The reconnect loop and the link's public face (state, agent -> server calls)."""

import time
import uuid

import gevent
import gevent.event
import websocket

from agent import __version__, exitcodes, log, sdnotify
from agent.errors import AgentError
from agent.protocol import envelope
from agent.worker.backoff import Backoff
from agent.worker.connection import (AUTH_TIMEOUT, AuthRefused, LinkStopped, ReadAhead, Session,
                                     guard_frame_size)

_log = log.get("connection")
MAX_PENDING_CALLS = 1000
SERVER_CALL_TIMEOUT = 30.0


class Link:
    def __init__(self, cfg, identity, outbox, on_authenticated=None, reenroll=None):
        self.cfg = cfg
        self.identity = identity            # agent.worker.identity.Identity
        self.outbox = outbox
        self.dispatcher = None              # what run() serves
        self.on_authenticated = on_authenticated
        self.reenroll = reenroll            # () -> Identity or None (Certificate expired)
        self.backoff = Backoff.from_config(cfg)
        self.session = None
        self.connected = gevent.event.Event()
        self.state, self.since, self.reconnects = "connecting", time.time(), 0
        self.server_uid = None
        self._pending = {}
        self._stopping = False

    # -- public ----------------------------------------------------------
    def use_identity(self, identity):
        """Connect with ``identity`` (a renewed certificate) from the next connection on."""
        self.identity = identity

    def status(self):
        """Figures for monitoring.status (docs/commands.md)."""
        return {"connection": {"state": self.state, "since": self.since, "reconnects": self.reconnects},
                "outbox_queued": len(self.outbox), "outbox_dropped": self.outbox.dropped,
                "events_unencodable": sum(envelope.unencodable.values())}

    def send_direct(self, frame, droppable=False):
        """Queue on the live session; without one, drop (log chunks, stats, inline replies).

        Not gated on ``connected``: the reader answers a call as soon as the session is
        authenticated, which can be before this link greenlet has marked itself connected."""
        session = self.session
        if session is not None and session.serving():
            session.send(frame, droppable)

    def call_server(self, event, data, timeout=SERVER_CALL_TIMEOUT):
        """docs/commands.md, "Agent -> server calls": an agent -> server call; waits for a reconnect within the timeout."""
        if len(self._pending) >= MAX_PENDING_CALLS:
            raise AgentError("unavailable", "call failed: too many pending calls")
        deadline = time.monotonic() + timeout
        if not self.connected.wait(timeout):
            raise AgentError("unavailable", f"call failed: not connected to the control plane ({event})")
        call_id = str(uuid.uuid4())
        result = gevent.event.AsyncResult()
        self._pending[call_id] = result
        try:
            self.session.send({"type": "call", "call_id": call_id, "event": event, "data": data})
            reply = result.get(timeout=max(0.0, deadline - time.monotonic()))
        except gevent.Timeout:
            raise AgentError("unavailable", f"call failed: no reply to {event} within {timeout:g} s") from None
        finally:
            self._pending.pop(call_id, None)
        return _reply_data(event, reply)

    def resolve_call(self, message):
        result = self._pending.get(message.call_id)
        if result is not None:
            result.set(message.raw)

    def reconnect(self, reason):
        """Close the current session (e.g. to use a renewed certificate)."""
        if self.session is not None:
            _log.info("reconnecting: %s", reason)
            self.session.close(websocket.STATUS_NORMAL)

    def stop(self):
        self._stopping = True
        if self.session is not None:
            self.session.close(websocket.STATUS_GOING_AWAY, b"agent shutting down")

    # -- the loop --------------------------------------------------------
    def run(self, dispatcher):
        """Connect, authenticate, hand calls to ``dispatcher``; reconnect with backoff.
        Raises LinkStopped."""
        self.dispatcher = dispatcher
        while not self._stopping:
            try:
                self._serve_once()
                lost = "connection lost"
            except AuthRefused as exc:
                lost = self._auth_refused(exc)
            except (OSError, websocket.WebSocketException, ConnectionError, gevent.Timeout) as exc:
                lost = _describe(exc)
            if self._stopping:
                return
            self._set_state("disconnected")
            delay = self.backoff.next_delay()
            if delay is None:
                raise LinkStopped(exitcodes.GAVE_UP, f"giving up reconnecting after: {lost}")
            _log.warning("%s; reconnecting in %.1f s", lost, delay)
            gevent.sleep(delay)
            self.reconnects += 1

    def _serve_once(self):
        self._set_state("connecting")
        ws = self._connect()
        session = self.session = Session(self, ws, self.identity)
        session.start()
        try:
            self.server_uid = session.authenticated.get(timeout=AUTH_TIMEOUT)
        except gevent.Timeout:
            session.close()
            raise ConnectionError("authentication timed out") from None
        except BaseException:
            session.close()
            raise
        self.backoff.reset()
        self._set_state("connected")
        self.connected.set()
        _log.info("authenticated as %s", self.server_uid)
        try:
            if self.on_authenticated is not None:
                self.on_authenticated(self)
            while not session.closed.wait(timeout=1.0):
                pass    # a bounded wait: a lost wake-up must not keep a dead session (docs/design.md)
        finally:
            self.connected.clear()
            session.close()

    def _connect(self):
        url = self.cfg.websocket_url
        sslopt = None
        if url.startswith("wss://"):
            sslopt = {"context": self.identity.ssl_context(self.cfg.server_ca_file)}
        try:
            ws = websocket.create_connection(
                url, timeout=AUTH_TIMEOUT, sslopt=sslopt, skip_utf8_validation=True,
                enable_multithread=True, header=[f"User-Agent: PulseUp-Agent/{__version__}"])
        except websocket.WebSocketConnectionClosedException:
            # docs/hosts.md, "TLS": a refused client certificate shows up as "connection lost"
            raise ConnectionError("the server closed the connection during the handshake "
                                  "(is the client certificate accepted?)") from None
        ws.settimeout(self.cfg.ping_timeout)
        ReadAhead(ws)
        guard_frame_size(ws, self.cfg.max_message_bytes)
        return ws

    def _auth_refused(self, exc):
        reason = str(exc)
        if not exc.permanent:
            return f"authentication refused: {reason}"
        if reason == "Certificate expired" and self.reenroll is not None:
            identity = self.reenroll()
            if identity is not None:
                self.identity = identity
                return "certificate expired; re-enrolled"
            raise LinkStopped(exitcodes.NO_IDENTITY, "certificate expired and no JOIN_TOKEN to re-enroll")
        cooldown = self.cfg.auth_permanent_failure_cooldown
        _log.error("authentication permanently refused (%s); not retrying for %.0f s", reason, cooldown)
        self._set_state("refused")
        gevent.sleep(cooldown)
        self.backoff.reset()
        return f"authentication refused: {reason}"

    def _set_state(self, state):
        if state != self.state:
            self.state, self.since = state, time.time()
            sdnotify.notify(f"STATUS={state}")


def _reply_data(event, reply):
    """Top-level success/data/error, or success inside data (docs/commands.md, "Agent -> server calls")."""
    success, data, error = reply.get("success"), reply.get("data"), reply.get("error")
    if success is None and isinstance(data, dict) and "success" in data:
        success, error, data = data.get("success"), data.get("error"), data.get("data")
    if success is not True:
        raise AgentError("unavailable", f"call failed: {event}: {error or 'refused'}")
    return data


def _describe(exc):
    text = str(exc) or type(exc).__name__
    return f"connection failed: {text}"
