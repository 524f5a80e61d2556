"""The authentication hang, reproduced deterministically (issue 16).

A server that ends the connection right around ``auth_response`` used to leave the agent
'connected' to a closed session for good: gevent 26.9 loses the wake-up of a greenlet waiting
on an already-set event when another greenlet's multi-object wait unlinks from it
(docs/design.md, "gevent: one waiter, one event"). Each variant runs many cycles; every
reconnect must come within the reconnect delay + jitter + 2 s.
"""

import time

import gevent
import pytest

from agent.devserver import session as devsession

CYCLES = 25
RECONNECT_BACKOFF_MAX = 0.5
SLACK = 2.0


def _close_after_auth_response(self):
    uid, _ = self._authenticate()
    self.conn.send({"type": "auth_response", "data": {"success": True, "server_uid": uid}})
    self.conn.close()


def _abort_after_auth_response(self):
    uid, _ = self._authenticate()
    self.conn.send({"type": "auth_response", "data": {"success": True, "server_uid": uid}})
    self.conn.abort()


def _close_after_connected(self):
    uid, _ = self._authenticate()
    self.conn.send({"type": "auth_response", "data": {"success": True, "server_uid": uid}})
    self.conn.send({"type": "connected", "data": {"server_uid": uid}})
    self.conn.close()


def _close_before_auth_response(self):
    self._authenticate()
    self.conn.close()


@pytest.mark.parametrize("behaviour", [
    _close_after_auth_response, _abort_after_auth_response, _close_after_connected,
    _close_before_auth_response])
def test_server_ending_the_connection_around_authentication_never_hangs_the_agent(
        monkeypatch, devserver, start_agent, behaviour):
    sessions = []

    def run(self):
        sessions.append(time.monotonic())
        try:
            behaviour(self)
        except (devsession.AuthFailed, devsession.Closed):
            pass
    monkeypatch.setattr(devsession.AgentSession, "run", run)
    agent = start_agent(url=devserver.ws_url, reconnect_interval=0.1, reconnect_backoff_max=RECONNECT_BACKOFF_MAX)
    bound = RECONNECT_BACKOFF_MAX + SLACK
    deadline = time.monotonic() + CYCLES * (bound + 1)
    while len(sessions) < CYCLES and time.monotonic() < deadline:
        gevent.sleep(0.05)
        if sessions and time.monotonic() - sessions[-1] > bound:
            pytest.fail(f"no reconnect within {bound} s after cycle {len(sessions)} "
                        f"(link state {agent.worker.link.state})")
    assert len(sessions) >= CYCLES
    gaps = [b - a for a, b in zip(sessions, sessions[1:])]
    assert max(gaps) <= bound, gaps


def test_a_call_sent_with_auth_response_is_answered(monkeypatch, devserver, start_agent):
    """The reader dispatches a call as soon as the session is authenticated, possibly before
    the link greenlet has marked itself connected: the inline reply must still be written."""

    def run(self):
        try:
            uid, version = self._authenticate()
        except (devsession.AuthFailed, devsession.Closed):
            return
        hub = self.server.hub
        hub.attach(uid, self.conn, version)
        try:
            self.conn.send({"type": "auth_response", "data": {"success": True, "server_uid": uid}})
            self.conn.send({"type": "call", "call_id": "early-ping", "event": "agent.ping", "data": {"n": 1}})
            self.conn.send({"type": "connected", "data": {"server_uid": uid}})
            self._read_loop(hub.state(uid))
        except devsession.Closed:
            pass
        finally:
            hub.detach(uid, self.conn)
            self.conn.close()
    monkeypatch.setattr(devsession.AgentSession, "run", run)
    agent = start_agent()
    with gevent.Timeout(10):
        while not any(f.get("type") == "response" and f.get("call_id") == "early-ping"
                      for f in devserver.received_frames(agent.uid)):
            gevent.sleep(0.05)
