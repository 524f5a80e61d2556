"""Server side of one WebSocket connection, on wsproto over a gevent socket.

One reader (the connection's own greenlet) calls `recv_text`; any greenlet may call
`send_json` (sends are serialised by a lock, docs/protocol.md, "Connection").
"""

import json
import logging
import socket
import struct

import gevent.lock
from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, CloseConnection, Message, Ping, Request,
                            TextMessage)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

log = logging.getLogger(__name__)

RECV_SIZE = 65536
CLOSE_TOO_BIG = 1009
CLOSE_POLICY = 1008


class Closed(Exception):
    """The peer closed the connection, or it broke."""


class WebSocket:
    def __init__(self, sock, max_message_bytes):
        self.sock = sock
        self.max_message_bytes = max_message_bytes
        self._ws = WSConnection(ConnectionType.SERVER)
        self._send_lock = gevent.lock.RLock()
        self._parts = []
        self._size = 0
        self.closed = False

    def accept(self, req, trailing=b""):
        """Complete the upgrade handshake for an h11-parsed request `req`."""
        try:
            self._ws.initiate_upgrade_connection(req.raw_headers, req.path)
            if trailing:
                self._ws.receive_data(trailing)
        except RemoteProtocolError as e:
            self._write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n"
                        b"connection: close\r\n\r\n")
            raise Closed("bad upgrade request: %s" % e) from e
        for event in self._ws.events():
            if isinstance(event, Request):
                self._write(self._ws.send(AcceptConnection()))
                return
        raise Closed("not a WebSocket upgrade request")

    def send_json(self, obj):
        self.send_text(json.dumps(obj))

    def send_text(self, text):
        with self._send_lock:
            if self.closed:
                raise Closed("connection closed")
            self._write(self._ws.send(Message(data=text)))

    def _write(self, data):
        try:
            self.sock.sendall(data)
        except OSError as e:
            self.closed = True
            raise Closed(str(e)) from e

    def recv_text(self):
        """Return the next complete text (or binary, decoded) message; raises Closed."""
        while True:
            for event in self._ws.events():
                text = self._on_event(event)
                if text is not None:
                    return text
            try:
                data = self.sock.recv(RECV_SIZE)
            except OSError as e:
                self.closed = True
                raise Closed(str(e)) from e
            try:
                self._ws.receive_data(data or None)
            except (LocalProtocolError, RemoteProtocolError) as e:
                self.abort()
                raise Closed(str(e)) from e

    def _on_event(self, event):
        if isinstance(event, Message):
            return self._add_part(event)
        if isinstance(event, Ping):
            with self._send_lock:
                self._write(self._ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            self._answer_close(event)
            raise Closed("closed by peer: %s %s" % (event.code, event.reason or ""))
        return None

    def _add_part(self, event):
        self._size += len(event.data)
        if self._size > self.max_message_bytes:
            self.close(CLOSE_TOO_BIG, "message too big")
            raise Closed("message too big")
        self._parts.append(event.data)
        if not event.message_finished:
            return None
        parts, self._parts, self._size = self._parts, [], 0
        if isinstance(event, TextMessage):
            return "".join(parts)
        return b"".join(parts).decode("utf-8", "replace")

    def _answer_close(self, event):
        with self._send_lock:
            try:
                self._write(self._ws.send(event.response()))
            except (LocalProtocolError, Closed):
                pass
            self.closed = True
        self._close_socket()

    def close(self, code=1000, reason=""):
        """Send a close frame (best effort) and close the socket."""
        with self._send_lock:
            if not self.closed:
                try:
                    self._write(self._ws.send(CloseConnection(code=code, reason=reason)))
                except (LocalProtocolError, Closed):
                    pass
            self.closed = True
        self._close_socket()

    def abort(self):
        """Drop the TCP connection without a close frame (RST), as a crashed server would."""
        self.closed = True
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    def _close_socket(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass
        try:
            self.sock.close()
        except OSError:
            pass
