"""The worker's link against the real devserver over real TLS (docs/protocol.md, "Connection",
"Delivery")."""

import time

import gevent
import pytest

from agent.worker.main import Worker


def test_connects_authenticates_and_answers(devserver, start_worker):
    running, identity = start_worker()
    uid = devserver.wait_connected(identity.server_uid, timeout=10)
    reply = devserver.call(uid, "agent.ping", {"hello": "world"}, timeout=10)
    assert reply["success"] is True and reply["data"]["echo"] == {"hello": "world"}
    agents = {a["server_uid"]: a for a in devserver.agents()}
    assert agents[uid]["connected"] and agents[uid]["hardware_info"]
    reply = devserver.call(uid, "no.such.command", {}, timeout=10)
    assert (reply["success"], reply["code"]) == (False, "unimplemented")


def test_many_concurrent_pings_none_lost(devserver, start_worker):
    running, identity = start_worker(max_concurrent_commands=64)
    uid = devserver.wait_connected(identity.server_uid, timeout=10)
    replies = gevent.joinall([gevent.spawn(devserver.call, uid, "agent.ping", {"n": n}, 30)
                              for n in range(200)], timeout=60)
    echoes = sorted(g.value["data"]["echo"]["n"] for g in replies)
    assert echoes == list(range(200))


def test_slow_command_does_not_delay_ping(devserver, start_worker):
    running, identity = start_worker()
    uid = devserver.wait_connected(identity.server_uid, timeout=10)
    slow = gevent.spawn(devserver.call, uid, "test.sleep", {"seconds": 3}, 30)
    gevent.sleep(0.2)
    started = time.monotonic()
    assert devserver.call(uid, "agent.ping", {}, timeout=10)["success"]
    assert time.monotonic() - started < 0.5    # generous bound; bench/ has the real figure
    assert slow.get(timeout=30)["success"]


def test_cancel_frame_and_deadline(devserver, start_worker):
    running, identity = start_worker()
    uid = devserver.wait_connected(identity.server_uid, timeout=10)
    call = gevent.spawn(devserver.call, uid, "test.sleep", {"seconds": 20}, 30, "cancel-me")
    gevent.sleep(0.3)
    devserver.cancel(uid, "cancel-me")
    assert call.get(timeout=10)["code"] == "cancelled"
    reply = devserver.call(uid, "test.sleep", {"seconds": 20, "timeout_seconds": 0.3}, timeout=10)
    assert reply["code"] == "deadline_exceeded"


def test_response_survives_server_drop_and_is_not_run_twice(devserver, start_worker):
    running, identity = start_worker()
    uid = devserver.wait_connected(identity.server_uid, timeout=10)
    call = gevent.spawn(devserver.call, uid, "test.sleep", {"seconds": 1.5}, 30, "survivor")
    gevent.sleep(0.3)
    devserver.drop_connection(uid)
    # the reply is delivered after the reconnect, through the outbox
    reply = call.get(timeout=20)
    assert reply["success"] and reply["data"] == {"slept": 1.5}
    # re-sending the same call_id is answered from the call log, not run again
    again = devserver.call(uid, "test.sleep", {"seconds": 1.5}, timeout=10, call_id="survivor")
    assert again["data"] == {"slept": 1.5}
    jobs = [f for f in devserver.received_frames(uid) if f.get("call_id") == "survivor"]
    assert len(jobs) >= 1
    assert running.worker.link.reconnects >= 1


def test_revoked_certificate_is_refused(devserver, start_worker, tmp_path):
    running, identity = start_worker(auth_permanent_failure_cooldown=30)
    uid = devserver.wait_connected(identity.server_uid, timeout=10)
    devserver.revoke(uid)
    with gevent.Timeout(40):
        while running.worker.link.state != "refused":
            gevent.sleep(0.1)
    assert not devserver.agents()[0]["connected"]


def test_gives_up_with_exit_code_when_reconnect_disabled(tmp_path, devserver, start_worker):
    from agent import exitcodes
    running, identity = start_worker(reconnect_enabled=False)
    uid = devserver.wait_connected(identity.server_uid, timeout=10)
    devserver.stop()
    assert running.greenlet.get(timeout=15) == exitcodes.GAVE_UP


def test_insecure_url_refused(tmp_path):
    from agent import config, exitcodes
    from agent.worker.main import _check_transport
    cfg = config.defaults().replace(websocket_url="ws://127.0.0.1:1/ws/agent_v2")
    assert "insecure" in _check_transport(cfg)
    assert _check_transport(cfg.replace(allow_insecure_transport=True)) is None
    assert exitcodes.CONFIG == 78


def test_renewal_reconnects_with_the_new_certificate(tmp_path):
    from agent.devserver.server import DevServer
    from tests.worker.conftest import RunningWorker, agent_config
    from agent.services.system import SystemService
    from agent.worker.identity import enroll
    server = DevServer(str(tmp_path / "dev"), listen="127.0.0.1:0", cert_lifetime=6)
    server.start()
    try:
        cfg = agent_config(tmp_path, server)
        identity = enroll(cfg, server.create_token(), SystemService(cfg).hardware_info())
        running = RunningWorker(cfg, identity)
        uid = server.wait_connected(identity.server_uid, timeout=10)
        with gevent.Timeout(20):
            while running.worker.link.identity.serial == identity.serial or running.worker.link.reconnects < 1:
                gevent.sleep(0.2)
        server.wait_connected(uid, timeout=10)
        assert server.call(uid, "agent.ping", {}, timeout=10)["success"]
        assert running.worker.link.identity.serial != identity.serial
        running.stop()
    finally:
        server.stop()
