"""A loopback TCP proxy between the agent and the devserver that can cut or stall the line.

TLS stays end to end (the proxy only moves bytes), so the agent still verifies the server's
certificate for 127.0.0.1. ``cut()`` resets every current connection (as a broken NAT or a
crashed middlebox would); ``stall()`` keeps them open but silently discards every byte in
both directions (a black hole: only keep-alive timeouts can notice). New connections are
always forwarded normally, so the agent can reconnect through the same address.
"""

import socket
import struct

import gevent
import gevent.pool
import gevent.server


class _Pair:
    def __init__(self, client, upstream):
        self.client, self.upstream = client, upstream
        self.stalled = False

    def pump(self, source, target):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if not self.stalled:
                    target.sendall(data)
        except OSError:
            pass
        finally:
            self.reset()

    def reset(self):
        for sock in (self.client, self.upstream):
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            except OSError:
                pass


class TcpProxy:
    def __init__(self, target_port, target_host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.pairs = []
        self.accepted = 0
        self.group = gevent.pool.Group()
        self.server = gevent.server.StreamServer(("127.0.0.1", 0), self._handle)

    def start(self):
        self.server.start()
        self.port = self.server.server_port
        return self

    def stop(self):
        self.server.stop(timeout=1)
        self.cut()
        self.group.kill(block=False)

    def _handle(self, client, address):
        self.accepted += 1
        upstream = socket.create_connection(self.target, timeout=5)
        upstream.settimeout(None)
        pair = _Pair(client, upstream)
        self.pairs.append(pair)
        self.group.spawn(pair.pump, upstream, client)
        pair.pump(client, upstream)

    def cut(self):
        """Reset every current connection."""
        pairs, self.pairs = self.pairs, []
        for pair in pairs:
            pair.reset()

    def stall(self):
        """Black-hole every current connection (bytes read and dropped, nothing closed)."""
        pairs, self.pairs = self.pairs, []
        for pair in pairs:
            pair.stalled = True
        return pairs
