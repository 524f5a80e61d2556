"""The worker's link to the control plane (docs/protocol.md: connection, authentication,
delivery).

:class:`Link` owns the reconnect loop; each connection is a :class:`Session`
with exactly one reader greenlet that never waits, one sender greenlet that
serialises every write (direct frames: pongs, pings, errors, log chunks; then
the outbox's durable frames, in order) and a watchdog that declares the
session dead when it stops reading or writing.
"""

import collections
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
CLOSE_TIMEOUT = 1.0
WRITE_BATCH = 64
WRITE_BATCH_BYTES = 256 * 1024
READ_AHEAD = 64 * 1024
_DATA_OPCODES = (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY, websocket.ABNF.OPCODE_CONT)


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


class ReadAhead:
    """websocket-client reads a frame with one socket read per part (header, length, mask,
    payload); this gives its frame buffer the bytes from one larger read instead, so the
    frames of a busy connection cost one TLS read between them, not three each."""

    def __init__(self, ws, size=READ_AHEAD):
        self._recv = ws.frame_buffer.recv        # raises when the peer closed
        self._size = size
        self._data, self._offset = b"", 0
        ws.frame_buffer.recv = self

    def __call__(self, bufsize):
        if self._offset >= len(self._data):
            self._data, self._offset = self._recv(max(bufsize, self._size)), 0
        end = self._offset + bufsize
        chunk = self._data[self._offset:end]
        self._offset = end
        return chunk


def valid_nonce(nonce):
    """Sign only 16-256 printable ASCII characters (docs/protocol.md, authentication)."""
    return isinstance(nonce, str) and 16 <= len(nonce) <= 256 and all(" " <= c <= "~" for c in nonce)


class Session:
    """One WebSocket connection: authentication, reader, sender, watchdog.

    Three greenlets in one group; any of them failing ends the session (the link then
    reconnects), so none can die alone and leave a connected but mute agent.
    """

    def __init__(self, link, ws, identity):
        self.link = link
        self.ws = ws
        self.identity = identity
        self.authenticated = gevent.event.AsyncResult()
        self.closed = gevent.event.Event()
        self.direct = collections.deque()        # (queued at, opcode, payload bytes)
        # The sender's only wait. It must not gevent.wait() on several shared events:
        # gevent 26.9 loses the wake-up of a greenlet waiting on an already-set event
        # when another greenlet's multi-object wait unlinks from it (docs/design.md,
        # "gevent: one waiter, one event").
        self.wake = gevent.event.Event()
        self.group = gevent.pool.Group()
        self.last_seen = self.last_write = time.monotonic()

    def start(self):
        for name, func in (("reader", self._reader), ("sender", self._sender), ("watchdog", self._watchdog)):
            greenlet = self.group.spawn(func)
            greenlet.name = name
            greenlet.link_exception(self._crashed)
        self.link.outbox.on_ready = self.wake.set

    def send(self, frame, droppable=False):
        """Queue a frame for the sender, strictly encoded first; never blocks the caller."""
        if droppable and len(self.direct) >= DIRECT_QUEUE_MAX:
            return
        fitted = envelope.outbound(frame)
        if fitted is not None:
            self._queue(websocket.ABNF.OPCODE_TEXT, fitted[1])

    def _queue(self, opcode, payload):
        self.direct.append((time.monotonic(), opcode, payload))
        self.wake.set()

    def close(self, status=websocket.STATUS_NORMAL, reason=b""):
        """Send a close frame (best effort, bounded) and end the session."""
        if self.closed.is_set():
            return
        self.closed.set()
        try:
            with gevent.Timeout(CLOSE_TIMEOUT):
                self.ws.send_close(status, reason)
        except (OSError, websocket.WebSocketException, gevent.Timeout):  # the socket may be gone
            pass
        self._end()

    def abort(self, reason):
        """End the session without a goodbye (the peer or the socket is not answering)."""
        if self.closed.is_set():
            return
        _log.warning("closing the connection: %s", reason)
        self.closed.set()
        self._end()

    def _end(self):
        self.ws.shutdown()
        if self.link.outbox.on_ready == self.wake.set:
            self.link.outbox.on_ready = None
        self.wake.set()
        self.group.kill(block=False)
        if not self.authenticated.ready():
            self.authenticated.set_exception(ConnectionError("connection closed"))

    def _crashed(self, greenlet):
        log.log_greenlet_crash(greenlet)
        self.abort(f"the {getattr(greenlet, 'name', 'session')} greenlet failed")

    # -- reader ----------------------------------------------------------
    def _reader(self):
        try:
            while not self.closed.is_set():
                message = self._next_message()
                if message is None:
                    break
                self._on_frame(message)
        except FrameTooLarge as exc:
            _log.warning("closing: %s", exc)
            self.close(websocket.STATUS_MESSAGE_TOO_BIG, b"message too big")
        except (websocket.WebSocketException, OSError) as exc:
            if not self.closed.is_set():
                _log.warning("connection lost: %s", exc or type(exc).__name__)
        finally:
            self.close()

    def _next_message(self):
        """The next whole data message (continuations joined), or None on a close frame.

        MAX_MESSAGE_BYTES bounds the whole message, not each frame: the running total of a
        fragmented message is checked as every fragment arrives.
        """
        limit = self.link.cfg.max_message_bytes
        parts, size = [], 0
        while True:
            frame = self.ws.recv_frame()
            self.last_seen = time.monotonic()
            opcode = frame.opcode
            if opcode in _DATA_OPCODES:
                if (opcode == websocket.ABNF.OPCODE_CONT) != bool(parts):
                    raise websocket.WebSocketProtocolException("unexpected continuation state")
                size += len(frame.data)
                if size > limit:
                    raise FrameTooLarge(f"incoming message of more than {limit} bytes (MAX_MESSAGE_BYTES)")
                parts.append(frame.data)
                if frame.fin:
                    return parts[0] if len(parts) == 1 else b"".join(parts)
            elif opcode == websocket.ABNF.OPCODE_CLOSE:
                return None
            elif opcode == websocket.ABNF.OPCODE_PING:
                self._queue(websocket.ABNF.OPCODE_PONG, frame.data)

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
        self.wake.set()                 # the sender may now write the outbox
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
            outcome = self.link.dispatcher.cancel(call_id)
        except AgentError as exc:
            self.send(envelope.error_frame(exc.code, exc.message))
            return
        if outcome == "not_cancellable":   # past its point of no return: it completes
            self.send(envelope.error_frame("not_cancellable", f"call {call_id[:64]} is past its point of no return"))

    def serving(self):
        """Authenticated and not closed: frames of the agent's own may be queued."""
        return not self.closed.is_set() and self._is_authenticated()

    def _is_authenticated(self):
        return self.authenticated.ready() and self.authenticated.successful()

    # -- sender and watchdog ---------------------------------------------
    def _sender(self):
        outbox = self.link.outbox
        try:
            while not self.closed.is_set():
                if self.direct or (self._is_authenticated() and len(outbox)):
                    self._write_batch(outbox)
                    continue
                self.wake.clear()
                if not self.direct and not (self._is_authenticated() and len(outbox)):
                    self.wake.wait()
        except (websocket.WebSocketException, OSError) as exc:
            self.abort(f"write failed: {exc or type(exc).__name__}")

    def _write_batch(self, outbox):
        """Write what is queued in one go (direct frames first, then the outbox's head, in
        order): one TLS write for up to WRITE_BATCH frames instead of one per frame."""
        frames, size = [], 0
        while self.direct and len(frames) < WRITE_BATCH and size < WRITE_BATCH_BYTES:
            _, opcode, payload = self.direct.popleft()
            frames.append(self._frame(payload, opcode))
            size += len(payload)
        sent = []
        if self._is_authenticated() and len(frames) < WRITE_BATCH and size < WRITE_BATCH_BYTES:
            for seq, payload in outbox.head(WRITE_BATCH - len(frames), WRITE_BATCH_BYTES - size):
                frames.append(self._frame(payload, websocket.ABNF.OPCODE_TEXT))
                sent.append(seq)
        with self.ws.lock:
            self.ws.sock.sendall(frames[0] if len(frames) == 1 else b"".join(frames))
        self.last_write = time.monotonic()
        for seq in sent:
            outbox.ack(seq)

    def _frame(self, payload, opcode):
        frame = websocket.ABNF.create_frame(payload, opcode)
        if self.ws.get_mask_key is not None:       # tests may pin the mask
            frame.get_mask_key = self.ws.get_mask_key
        return frame.format()

    def _watchdog(self):
        """Keep-alive and liveness: pings through the sender; the session is declared dead
        when nothing was read, or nothing written, or a queued frame waited, for PING_TIMEOUT."""
        cfg = self.link.cfg
        while not self.closed.is_set():
            gevent.sleep(min(cfg.ping_interval, cfg.ping_timeout / 3))
            problem = self._liveness_problem(cfg.ping_timeout, time.monotonic())
            if problem is not None:
                self.abort(problem)
                return
            self._queue(websocket.ABNF.OPCODE_PING, b"")

    def _liveness_problem(self, timeout, now):
        if now - self.last_seen > timeout:
            return f"no data or pong for {timeout:.0f} s: the connection is dead"
        if now - self.last_write > timeout:
            return f"nothing could be written for {timeout:.0f} s"
        if self.direct and now - self.direct[0][0] > timeout:
            return f"a frame has waited {timeout:.0f} s to be written"
        return None


ProtocolErrorType = envelope.ProtocolError
