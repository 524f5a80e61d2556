"""Frames over MAX_MESSAGE_BYTES sent by a server (docs/protocol.md, "Connection"): the agent closes the
connection with 1009 and reconnects; frames under the limit are served as usual."""

import logging
import struct

import gevent
import pytest
from wsproto.events import CloseConnection

from bench.common import EchoServer

LIMIT = 64 * 1024


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def session_log():
    handler, logger = Records(), logging.getLogger("agent.devserver.session")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def send_from_server(devserver, uid, frame):
    devserver.hub.known(uid).conn.send(frame)


def test_frame_under_the_limit_is_served(devserver, start_agent):
    agent = start_agent(max_message_bytes=LIMIT)
    payload = "y" * (LIMIT - 1024)
    send_from_server(devserver, agent.uid, {"type": "ping", "data": payload})
    with gevent.Timeout(10):
        while not any(f.get("type") == "pong" and f.get("data") == payload
                      for f in devserver.received_frames(agent.uid)):
            gevent.sleep(0.05)
    assert agent.worker.link.reconnects == 0


def test_oversize_frame_closes_1009_and_reconnects(devserver, start_agent, session_log):
    agent = start_agent(max_message_bytes=LIMIT)
    send_from_server(devserver, agent.uid, {"type": "ping", "data": "x" * (LIMIT + 1)})
    agent.wait_reconnects(1, timeout=15)
    assert any("closed by peer: 1009" in m for m in session_log.messages), session_log.messages
    assert devserver.call(agent.uid, "agent.ping", {"after": "1009"}, timeout=10)["data"]["echo"] == {"after": "1009"}
    assert not any(f.get("type") == "pong" and len(str(f.get("data"))) > LIMIT
                   for f in devserver.received_frames(agent.uid))


def _hostile(announced, sent, outcome):
    """After the upgrade: a text frame header announcing ``announced`` bytes, ``sent`` of them,
    then wait for the agent's reaction (a close frame or the socket closing)."""
    def on_open(sock, ws):
        sock.sendall(struct.pack("!BBQ", 0x81, 127, announced) + b"a" * sent)
        with gevent.Timeout(5, False):
            while True:
                data = sock.recv(65536)
                if not data:
                    outcome.append("socket closed")
                    return
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, CloseConnection):
                        outcome.append(event.code)
                        return
        outcome.append("nothing within 5 s")
    return on_open


def run_hostile(devserver, start_agent, announced, sent):
    outcome = []
    cert_file, key_file = devserver.ca.ensure_server_cert("127.0.0.1")
    hostile = EchoServer(cert_file, key_file, on_open=_hostile(announced, sent, outcome))
    port = hostile.start()
    try:
        start_agent(url=f"wss://127.0.0.1:{port}/ws/agent_v2", max_message_bytes=LIMIT,
                    ping_timeout=60.0, reconnect_enabled=False)
        with gevent.Timeout(15):
            while not outcome:
                gevent.sleep(0.05)
    finally:
        hostile.stop()
    return outcome


def test_hostile_server_complete_oversize_frame_gets_1009(devserver, start_agent):
    # also proves the hostile server's harness: a complete frame over the limit is seen
    assert run_hostile(devserver, start_agent, 4 * LIMIT, 4 * LIMIT) == [1009]


def test_frame_announcing_a_huge_length_is_refused_before_buffering(devserver, start_agent):
    assert run_hostile(devserver, start_agent, 1 << 30, 4 * LIMIT) == [1009]
