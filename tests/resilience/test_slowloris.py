"""Slowloris on the devserver: clients that stall the TLS handshake, dribble HTTP headers one
byte at a time, or upgrade to a WebSocket and never authenticate must not keep others from
being served (every connection has its own greenlet; unauthenticated sockets are dropped after
the auth timeout: docs/devserver.md, "WebSocket `/ws/agent_v2`")."""

import socket
import ssl

import gevent
import gevent.pool
import requests

DRIBBLERS = 30


def silent_tcp(port, opened):
    sock = socket.create_connection(("127.0.0.1", port))
    opened.append(sock)         # never starts the TLS handshake


def tls(port, ca_file):
    context = ssl.create_default_context(cafile=ca_file)
    return context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1")


def dribble_headers(port, ca_file, opened):
    sock = tls(port, ca_file)
    opened.append(sock)
    sock.sendall(b"GET /api/agent/ca HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    for byte in b"X-Slow: " + b"z" * 200:
        sock.sendall(bytes([byte]))
        gevent.sleep(0.1)


def silent_websocket(port, ca_file, opened):
    sock = tls(port, ca_file)
    opened.append(sock)
    sock.sendall(b"GET /ws/agent_v2 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\n\r\n")
    reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 101")
    sock.recv(65536)            # the auth challenge; no proof ever follows
    gevent.sleep(60)


def fetch_ca(devserver):
    response = requests.get(devserver.url + "/api/agent/ca", verify=devserver.ca_file, timeout=5)
    response.raise_for_status()
    return response


def test_slow_clients_do_not_block_others(devserver, start_agent):
    opened, attackers = [], gevent.pool.Group()
    for _ in range(DRIBBLERS):
        attackers.spawn(silent_tcp, devserver.port, opened)
        attackers.spawn(dribble_headers, devserver.port, devserver.ca_file, opened)
        attackers.spawn(silent_websocket, devserver.port, devserver.ca_file, opened)
    try:
        with gevent.Timeout(10):
            while len(opened) < 3 * DRIBBLERS:
                gevent.sleep(0.05)
        # everyone else is still served: HTTPS, a new agent's TLS WebSocket, its calls
        for _ in range(5):
            assert fetch_ca(devserver).status_code == 200
        agent = start_agent()
        reply = devserver.call(agent.uid, "agent.ping", {"under": "slowloris"}, timeout=10)
        assert reply["data"]["echo"] == {"under": "slowloris"}
        assert not [g for g in attackers if g.dead and g.exception], "an attacker failed to attack"
    finally:
        attackers.kill(block=False)
        for sock in opened:
            sock.close()


def test_unauthenticated_websocket_is_dropped_after_the_auth_timeout(devserver):
    # the fixture's devserver has auth_timeout=5 (a server drops such sockets: docs/devserver.md,
    # "WebSocket `/ws/agent_v2`")
    sock = tls(devserver.port, devserver.ca_file)
    sock.sendall(b"GET /ws/agent_v2 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\n\r\n")
    sock.settimeout(30)
    received = b""
    with gevent.Timeout(30):
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    sock.close()
    # the refusal (auth_response success false), then the server closed the socket
    assert b"Authentication timeout" in received and b'"success": false' in received
