"""Nothing silences the agent (issue 16): a frame it cannot represent, a reply or an event it
cannot encode, a failure in any of the session's greenlets, a sender that stops writing, a
fragmented message over MAX_MESSAGE_BYTES. After each, the next ``agent.ping`` is answered, and
again after a restart of the worker on the same state directory."""

import gevent
import pytest
from wsproto.events import TextMessage

from agent.worker.main import Worker

SURROGATE_PING = '{"type":"call","call_id":"poison-1","event":"agent.ping","data":{"x":"\\ud800"}}'
NOT_UTF8_NAME = b"Dockerfile.\xff".decode("utf-8", "surrogateescape")   # what os.walk gives


def raw_send(devserver, uid, text):
    devserver.hub.known(uid).conn.ws.send_text(text)


def ping(devserver, agent, timeout=10):
    reply = devserver.call(agent.uid, "agent.ping", {}, timeout=timeout)
    assert reply["success"] is True, reply
    return reply


def restarted(devserver, agent):
    """A new Worker on the same state dir (outbox and call journals replayed), connected."""
    before = devserver.hub.known(agent.uid).conn
    agent.stop()
    agent.worker = Worker(agent.cfg, agent.worker.link.identity, agent.commands.registry)
    agent.greenlet = gevent.spawn(agent.worker.run)
    wait_for(lambda: (st := devserver.hub.known(agent.uid)) is not None and st.conn is not None
             and st.conn is not before and agent.worker.link.connected.is_set(), timeout=15)
    return agent


def wait_for(predicate, timeout=10):
    with gevent.Timeout(timeout):
        while not predicate():
            gevent.sleep(0.05)


def error_frames(devserver, uid):
    return [f["data"] for f in devserver.received_frames(uid) if f.get("type") == "error"]


def test_unpaired_surrogate_in_a_call_is_invalid_message_and_the_agent_answers_on(devserver, start_agent):
    agent = start_agent()
    raw_send(devserver, agent.uid, SURROGATE_PING)
    wait_for(lambda: any(e.get("code") == "invalid_message" and "surrogate" in e.get("message", "")
                         for e in error_frames(devserver, agent.uid)))
    ping(devserver, agent)
    ping(devserver, restarted(devserver, agent))
    assert agent.worker.link.reconnects == 0


@pytest.mark.parametrize("text", [
    '{"type":"call","call_id":"n1","event":"agent.ping","data":{"x":NaN}}',
    '{"type":"call","call_id":"n2","event":"agent.ping","data":{"x":1e999}}',
    '{"type":"call","call_id":{"a":1},"event":"agent.ping"}',
    '{"type":"call","call_id":"\\udfff","event":"agent.ping"}',
    '[' * 100_000,
])
def test_frames_it_cannot_represent_get_an_error_frame(devserver, start_agent, text):
    agent = start_agent()
    raw_send(devserver, agent.uid, text)
    wait_for(lambda: any(e.get("code") == "invalid_message" for e in error_frames(devserver, agent.uid)))
    ping(devserver, agent)


def test_a_reply_that_cannot_be_encoded_fails_its_own_call_only(devserver, start_agent):
    agent = start_agent()
    agent.commands.registry.add("test.poison_reply", lambda ctx, r: {"files": ["ok", NOT_UTF8_NAME]}, None)
    reply = devserver.call(agent.uid, "test.poison_reply", {}, timeout=10)
    assert reply["success"] is False and reply["code"] == "internal"
    assert "$.data.data.files[1]" in reply["error"] and "not valid UTF-8" in reply["error"]
    ping(devserver, agent)
    ping(devserver, restarted(devserver, agent))


def test_an_event_that_cannot_be_encoded_is_dropped_and_counted(devserver, start_agent):
    agent = start_agent()

    def emit_poison(ctx, request):
        ctx.emit("update_docker_config", {"service_uid": "s1", "dockerfile_paths": [NOT_UTF8_NAME]})
        ctx.emit("update_docker_config", {"service_uid": "s1", "dockerfile_paths": ["Dockerfile"]})
        return {}
    agent.commands.registry.add("test.poison_event", emit_poison, None)
    assert devserver.call(agent.uid, "test.poison_event", {}, timeout=10)["success"] is True
    assert agent.worker.link.status()["events_unencodable"] >= 1
    wait_for(lambda: any(f.get("event") == "update_docker_config" for f in devserver.received_frames(agent.uid)))
    sent = [f["data"] for f in devserver.received_frames(agent.uid) if f.get("event") == "update_docker_config"]
    assert sent == [{"service_uid": "s1", "dockerfile_paths": ["Dockerfile"]}]
    ping(devserver, restarted(devserver, agent))


class Injected(Exception):
    pass


def _raise_once(target, name):
    original = getattr(target, name)
    state = {"raised": False}

    def failing(*args, **kwargs):
        if not state["raised"]:
            state["raised"] = True
            raise Injected(f"injected into {name}")
        return original(*args, **kwargs)
    setattr(target, name, failing)


@pytest.mark.parametrize("greenlet, method", [
    ("reader", "_on_frame"), ("sender", "_write_batch"), ("watchdog", "_liveness_problem")])
def test_a_failure_in_any_session_greenlet_ends_the_session_and_it_reconnects(devserver, start_agent, greenlet, method):
    agent = start_agent(ping_interval=0.3)
    session = agent.worker.link.session
    _raise_once(session, method)
    devserver.hub.known(agent.uid).conn.send({"type": "ping", "data": "wake the reader and the sender"})
    wait_for(lambda: session.closed.is_set(), timeout=10)
    agent.wait_reconnects(1, timeout=15)
    ping(devserver, agent)


def test_a_sender_that_stops_writing_is_declared_dead_and_replaced(devserver, start_agent):
    agent = start_agent(ping_interval=0.5, ping_timeout=2.0)
    session = agent.worker.link.session
    session._write_batch = lambda outbox: gevent.sleep(3600)   # a write that never returns
    wait_for(lambda: session.closed.is_set(), timeout=20)
    agent.wait_reconnects(1, timeout=20)
    ping(devserver, agent)


def test_fragmented_message_over_the_limit_closes_1009(devserver, start_agent):
    limit = 64 * 1024
    agent = start_agent(max_message_bytes=limit)
    ws = devserver.hub.known(agent.uid).conn.ws
    with ws._send_lock:   # three fragments, each under the limit, together over it
        ws._write(ws._ws.send(TextMessage(data='{"type":"ping","data":"' + "a" * 30_000, message_finished=False)))
        ws._write(ws._ws.send(TextMessage(data="b" * 30_000, message_finished=False)))
        ws._write(ws._ws.send(TextMessage(data="c" * 30_000 + '"}', message_finished=True)))
    agent.wait_reconnects(1, timeout=15)
    ping(devserver, agent)


def test_fragmented_message_under_the_limit_is_served(devserver, start_agent):
    agent = start_agent(max_message_bytes=64 * 1024)
    ws = devserver.hub.known(agent.uid).conn.ws
    with ws._send_lock:
        ws._write(ws._ws.send(TextMessage(data='{"type":"ping","data":"fragmented-', message_finished=False)))
        ws._write(ws._ws.send(TextMessage(data='ok"}', message_finished=True)))
    wait_for(lambda: any(f.get("type") == "pong" and f.get("data") == "fragmented-ok"
                         for f in devserver.received_frames(agent.uid)))
    assert agent.worker.link.reconnects == 0


def test_cancel_past_the_point_of_no_return_answers_not_cancellable(devserver, start_agent):
    from tests.unit.fakes import SLEEP_SPEC, _SleepRequest
    agent = start_agent()

    def committed(ctx, request):
        ctx.point_of_no_return()
        gevent.sleep(request["seconds"])
        return {"done": True}
    agent.commands.registry.add("test.committed", committed, _SleepRequest(), operation=SLEEP_SPEC)
    call = gevent.spawn(devserver.call, agent.uid, "test.committed",
                        {"service_uid": "s1", "seconds": 1.0}, timeout=20, call_id="committed-1")
    wait_for(lambda: "committed-1" in agent.worker.dispatcher.running)
    gevent.sleep(0.2)
    devserver.cancel(agent.uid, "committed-1")
    wait_for(lambda: any(e.get("code") == "not_cancellable" and "committed-1" in e.get("message", "")
                         for e in error_frames(devserver, agent.uid)))
    assert call.get(timeout=20)["data"] == {"done": True}   # it completes
