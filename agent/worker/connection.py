"""The worker's link to the control plane (protocol.md 1, 3 and 5).

:class:`Link` owns the reconnect loop; each connection is a :class:`Session`
with exactly one reader greenlet that never waits (decisions 2) and one
sender greenlet that serialises every write: direct frames (pongs, errors,
log chunks) and the outbox's durable frames, in order.
"""

import time

import gevent
import gevent.event
import gevent.pool
import gevent.queue
import websocket

from agent import __version__, log
from agent.errors import AgentError
from agent.protocol import envelope

_log = log.get("connection")
AUTH_TIMEOUT = 30.0
PERMANENT_AUTH_ERRORS = ("Invalid or used token", "Token expired", "Certificate revoked", "Certificate expired")
DIRECT_QUEUE_MAX = 1000


class AuthRefused(Exception):
    def __init__(self, reason):
        super().__init__(reason)
        self.permanent = reason in PERMANENT_AUTH_ERRORS


class LinkStopped(Exception):
    """The link ended for good; ``exit_code`` is the process's."""

    def __init__(self, exit_code, reason):
        super().__init__(reason)
        self.exit_code = exit_code


class FrameTooLarge(Exception):
    pass


def guard_frame_size(ws, limit):
    """Refuse a frame as soon as its header announces more than ``limit`` bytes.

    websocket-client has no size limit and reads a whole payload before returning
    it, so a header announcing 1 GiB would be buffered in full; this checks the
    length the frame buffer has just parsed (websocket-client's frame_buffer
    .recv_length, stable since 1.0), before any payload is read.
    """
    buffer = ws.frame_buffer
    read_length = buffer.recv_length

    def checked():
        read_length()
        if buffer.length > limit:
            raise FrameTooLarge(f"incoming frame announces {buffer.length} bytes, over MAX_MESSAGE_BYTES")
    buffer.recv_length = checked


def valid_nonce(nonce):
    """decisions 6: sign only 16-256 printable ASCII characters."""
    return isinstance(nonce, str) and 16 <= len(nonce) <= 256 and all(" " <= c <= "~" for c in nonce)


class Session:
    """One WebSocket connection: authentication, reader, sender, keep-alive."""

    def __init__(self, link, ws, identity):
        self.link = link
        self.ws = ws
        self.identity = identity
        self.authenticated = gevent.event.AsyncResult()
        self.closed = gevent.event.Event()
        self.direct = gevent.queue.Queue()
        self.wake = gevent.event.Event()
        self.group = gevent.pool.Group()
        self.last_seen = time.monotonic()

    def start(self):
        for name, func in (("reader", self._reader), ("sender", self._sender), ("pinger", self._pinger)):
            greenlet = self.group.spawn(func)
            greenlet.name = name
            greenlet.link_exception(log.log_greenlet_crash)

    def send(self, frame, droppable=False):
        """Queue a frame for the sender; never blocks the caller."""
        if droppable and self.direct.qsize() >= DIRECT_QUEUE_MAX:
            return
        self.direct.put(frame)
        self.wake.set()

    def close(self, status=websocket.STATUS_NORMAL, reason=b""):
        if self.closed.is_set():
            return
        self.closed.set()
        try:
            self.ws.close(status=status, reason=reason, timeout=1)
        except (OSError, websocket.WebSocketException):  # the socket may already be gone
            pass
        self.ws.shutdown()
        self.group.kill(block=False)
        if not self.authenticated.ready():
            self.authenticated.set_exception(ConnectionError("connection closed"))

    # -- reader ----------------------------------------------------------
    def _reader(self):
        try:
            while not self.closed.is_set():
                opcode, data = self._receive()
                self.last_seen = time.monotonic()
                if opcode == websocket.ABNF.OPCODE_TEXT or opcode == websocket.ABNF.OPCODE_BINARY:
                    self._on_frame(data)
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    break
        except FrameTooLarge as exc:
            _log.warning("closing: %s", exc)
            self.close(websocket.STATUS_MESSAGE_TOO_BIG, b"frame too large")
        except (websocket.WebSocketException, OSError) as exc:
            if not self.closed.is_set():
                _log.warning("connection lost: %s", exc or type(exc).__name__)
        finally:
            self.close()

    def _receive(self):
        opcode, frame = self.ws.recv_data_frame(True)
        if len(frame.data) > self.link.cfg.max_message_bytes:
            raise FrameTooLarge(f"incoming frame of {len(frame.data)} bytes exceeds MAX_MESSAGE_BYTES")
        return opcode, frame.data

    def _on_frame(self, data):
        try:
            message = envelope.decode(data)
        except ProtocolErrorType as exc:
            _log.warning("invalid frame: %s", exc)
            self.send(envelope.error_frame(exc.code, str(exc)))
            return
        handler = getattr(self, f"_on_{message.type}", None)
        if handler is None:
            self.send(envelope.error_frame("invalid_message", f"unknown message type: {message.type[:64]}"))
            return
        handler(message)

    def _on_auth_challenge(self, message):
        nonce = message.data.get("nonce") if isinstance(message.data, dict) else None
        if not valid_nonce(nonce):
            self.send(envelope.error_frame("invalid_message", "auth_challenge nonce must be 16-256 printable ASCII"))
            return
        self.send({"type": "auth_proof", "data": {
            "method": "mtls", "certificate": self.identity.cert_pem,
            "signature": self.identity.sign(nonce), "nonce": nonce, "version": __version__}})

    def _on_auth_response(self, message):
        data = message.data if isinstance(message.data, dict) else {}
        if self.authenticated.ready():
            return
        if data.get("success") is True:
            self.authenticated.set(data.get("server_uid"))
        else:
            self.authenticated.set_exception(AuthRefused(str(data.get("error") or "authentication failed")))

    def _on_connected(self, message):
        pass

    def _on_pong(self, message):
        pass

    def _on_ping(self, message):
        self.send({"type": "pong", "data": message.data})

    def _on_error(self, message):
        data = message.data if isinstance(message.data, dict) else {}
        _log.warning("control plane reported an error: %s (%s)", str(data.get("message"))[:500], data.get("code"))

    def _on_response(self, message):
        self.link.resolve_call(message)

    def _on_call(self, message):
        if not self._is_authenticated():
            self.send(envelope.error_frame("unauthenticated", "authenticate before sending calls"))
            return
        self.link.dispatcher.handle(message)

    _on_event = _on_call
    _on_legacy = _on_call

    def _on_cancel(self, message):
        if not self._is_authenticated():
            self.send(envelope.error_frame("unauthenticated", "authenticate before sending cancel"))
            return
        call_id = message.data.get("call_id") if isinstance(message.data, dict) else None
        if not isinstance(call_id, str):
            self.send(envelope.error_frame("invalid_message", "cancel needs data.call_id (a string)"))
            return
        try:
            self.link.dispatcher.cancel(call_id)
        except AgentError as exc:
            self.send(envelope.error_frame(exc.code, exc.message))

    def _is_authenticated(self):
        return self.authenticated.ready() and self.authenticated.successful()

    # -- sender and keep-alive -------------------------------------------
    def _sender(self):
        outbox = self.link.outbox
        while not self.closed.is_set():
            sent = False
            if not self.direct.empty():
                self._write(self.direct.get_nowait())
                sent = True
            if self._is_authenticated():
                head = outbox.peek()
                if head is not None:
                    self.ws.send(head[1])
                    outbox.ack(head[0])
                    sent = True
            if not sent:
                self._idle(outbox)

    def _idle(self, outbox):
        self.wake.clear()
        if not self.direct.empty():
            return
        if self._is_authenticated():
            gevent.wait([self.wake, outbox.ready, self.closed], count=1)
        elif not self.authenticated.ready():
            gevent.wait([self.wake, self.authenticated, self.closed], count=1)
        else:
            gevent.wait([self.wake, self.closed], count=1)

    def _write(self, frame):
        self.ws.send(envelope.encode(frame))

    def _pinger(self):
        cfg = self.link.cfg
        while not self.closed.is_set():
            gevent.sleep(min(cfg.ping_interval, cfg.ping_timeout / 3))
            if time.monotonic() - self.last_seen > cfg.ping_timeout:
                _log.warning("no data or pong for %.0f s: the connection is dead", cfg.ping_timeout)
                self.close(websocket.STATUS_GOING_AWAY)
                return
            self.ws.ping()


ProtocolErrorType = envelope.ProtocolError
