"""Network faults between the agent and the control plane, through a loopback TCP proxy.

docs/protocol.md, "Delivery": in-flight calls survive a lost connection, their responses go
out through the outbox after the next authentication, and a call re-sent by the server after
a reconnect is answered from the idempotency store, never run twice. A response written into
a connection that later proves dead can be lost on the wire (the outbox forgets an entry once
written to the socket), so, like a real control plane, the tests re-send unanswered call_ids.
"""

import gevent

from agent.devserver.hub import CallTimeout, NotConnected


def wait_running(agent, call_ids, timeout=10):
    with gevent.Timeout(timeout):
        while any(agent.commands.runs[c] == 0 for c in call_ids):
            gevent.sleep(0.02)


def call_until_answered(devserver, agent, event, data, call_id, first_timeout=5, deadline=30):
    """Send, and re-send the same call_id after each timeout or disconnect (at-least-once)."""
    with gevent.Timeout(deadline):
        timeout = first_timeout
        while True:
            try:
                return devserver.call(agent.uid, event, data, timeout=timeout, call_id=call_id)
            except (CallTimeout, NotConnected):
                devserver.wait_connected(agent.uid, timeout=deadline)
                timeout = 2


def test_cut_mid_call_response_delivered_after_reconnect(devserver, proxy, start_agent):
    agent = start_agent(via=proxy)
    call = gevent.spawn(devserver.call, agent.uid, "test.count_sleep", {"seconds": 1.0}, 30, "cut-1")
    wait_running(agent, ["cut-1"])
    proxy.cut()
    reply = call.get(timeout=20)     # no re-send: the outbox delivers after the reconnect
    assert reply["success"] is True and reply["data"] == {"slept": 1.0}
    assert agent.worker.link.reconnects >= 1 and proxy.accepted >= 2
    assert agent.commands.runs["cut-1"] == 1


def test_flapping_line_every_call_answered_once(devserver, proxy, start_agent):
    agent = start_agent(via=proxy)
    ids = [f"flap-{n}" for n in range(30)]
    calls = [gevent.spawn(call_until_answered, devserver, agent, "test.count_sleep",
                          {"seconds": 0.2 + 0.05 * n}, call_id) for n, call_id in enumerate(ids)]
    wait_running(agent, ids)
    for _ in range(3):
        proxy.cut()
        agent.wait_reconnects(agent.worker.link.reconnects + 1)
        gevent.sleep(0.3)
    replies = [g.get(timeout=40) for g in calls]
    assert all(r["success"] for r in replies), [r for r in replies if not r["success"]][:2]
    assert [r["data"]["slept"] for r in replies] == [0.2 + 0.05 * n for n in range(30)]
    assert all(agent.commands.runs[c] == 1 for c in ids), agent.commands.runs
    assert agent.worker.link.reconnects >= 3


def test_stalled_line_is_detected_and_call_answered(devserver, proxy, start_agent):
    agent = start_agent(via=proxy, ping_interval=0.2, ping_timeout=1.0)
    first = gevent.spawn(devserver.call, agent.uid, "test.count_sleep", {"seconds": 0.5}, 4, "stall-1")
    wait_running(agent, ["stall-1"])
    stalled = proxy.stall()
    assert stalled, "the agent's connection went through the proxy"
    # dead-peer detection: nothing arrives for PING_TIMEOUT -> close and reconnect
    agent.wait_reconnects(1, timeout=10)
    try:
        reply = first.get(timeout=10)
    except CallTimeout:
        # the response went into the black hole: the server re-sends, the store answers
        reply = call_until_answered(devserver, agent, "test.count_sleep", {"seconds": 0.5}, "stall-1")
    assert reply["success"] is True and reply["data"] == {"slept": 0.5}
    assert agent.commands.runs["stall-1"] == 1
    assert devserver.call(agent.uid, "agent.ping", {}, timeout=10)["success"]


def test_server_killed_mid_command_gets_the_response_after_restart(tmp_path, devserver, start_agent):
    from agent.devserver.server import DevServer
    agent = start_agent()
    call = gevent.spawn(devserver.call, agent.uid, "test.count_sleep", {"seconds": 1.0}, 30, "killed-1")
    wait_running(agent, ["killed-1"])
    port = devserver.port
    devserver.stop()                               # the control plane dies with the call pending
    call.kill()                                    # ... and its waiting caller with it
    restarted = DevServer(str(tmp_path / "dev"), listen=f"127.0.0.1:{port}", auth_timeout=5).start()
    try:
        assert restarted.wait_connected(agent.uid, timeout=20) == agent.uid
        with gevent.Timeout(20):                   # delivered from the outbox, not lost
            while not [f for f in restarted.received_frames(agent.uid) if f.get("call_id") == "killed-1"]:
                gevent.sleep(0.05)
        [frame] = [f for f in restarted.received_frames(agent.uid) if f.get("call_id") == "killed-1"]
        assert frame["data"]["success"] is True and frame["data"]["data"] == {"slept": 1.0}
        assert agent.commands.runs["killed-1"] == 1
    finally:
        restarted.stop()
