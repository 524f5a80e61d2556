"""Calls, responses, agent -> server calls, SSE and the other HTTP endpoints, end to end."""

import hashlib
import json
import os
import threading

import gevent
import pytest
import websocket

from agent.devserver.server import CallTimeout, NotConnected
from devserver_client import HTTP, TestAgent, admin


def ok(data):
    return {"success": True, "data": data, "error": "", "code": ""}


def test_http_call_answered_by_the_agent(server, agent, identity):
    agent.serve(lambda frame: ok({"echo": frame["data"], "event": frame["event"]}))
    resp = admin(server).post(server.url + "/api/agents/%s/calls" % identity.server_uid,
                              json={"event": "agent.ping", "data": {"x": 1}})
    assert resp.status_code == 200
    assert resp.json() == ok({"echo": {"x": 1}, "event": "agent.ping"})


def test_failed_reply_is_still_http_200(server, agent, identity):
    agent.serve(lambda frame: {"success": False, "data": None, "error": "boom",
                               "code": "internal"})
    resp = admin(server).post(server.url + "/api/agents/%s/calls" % identity.server_uid,
                              json={"event": "x"})
    assert resp.status_code == 200
    assert resp.json() == {"success": False, "data": None, "error": "boom", "code": "internal"}


def test_call_to_unknown_or_disconnected_agent_is_404(server, identity):
    resp = admin(server).post(server.url + "/api/agents/nobody/calls", json={"event": "x"})
    assert resp.status_code == 404
    resp = admin(server).post(server.url + "/api/agents/%s/calls" % identity.server_uid,
                              json={"event": "x"})
    assert resp.status_code == 404
    with pytest.raises(NotConnected):
        server.call(identity.server_uid, "x")


def test_call_without_reply_is_504(server, agent, identity):
    resp = admin(server).post(server.url + "/api/agents/%s/calls" % identity.server_uid,
                              json={"event": "x", "timeout_s": 0.3})
    assert resp.status_code == 504
    with pytest.raises(CallTimeout):
        server.call(identity.server_uid, "x", timeout=0.2)


def test_caller_chosen_call_id_can_be_resent(server, agent, identity):
    seen = []
    agent.serve(lambda frame: seen.append(frame["call_id"]) or ok(len(seen)))
    uid = identity.server_uid
    assert server.call(uid, "x", call_id="c-1", timeout=5) == ok(1)
    assert server.call(uid, "x", call_id="c-1", timeout=5) == ok(2)
    assert seen == ["c-1", "c-1"]


def test_duplicate_responses_are_counted_and_ignored(server, agent, identity):
    uid = identity.server_uid
    call = gevent.spawn(server.call, uid, "x", {"a": 1}, 5, "dup-1")
    frame = agent.recv()
    assert frame == {"type": "call", "call_id": "dup-1", "event": "x", "data": {"a": 1}}
    for value in (1, 2):
        agent.send({"type": "response", "call_id": "dup-1", "data": ok(value)})
    assert call.get(timeout=5) == ok(1)
    agent.send({"type": "ping", "data": "sync"})
    assert agent.recv() == {"type": "pong", "data": "sync"}
    listed = admin(server).get(server.url + "/api/agents").json()["agents"]
    assert listed[0]["duplicate_responses"] == 1


def test_response_after_reconnect_resolves_the_call(server, agent, identity):
    uid = identity.server_uid
    call = gevent.spawn(server.call, uid, "deploy", None, 10, "c-77")
    assert agent.recv()["call_id"] == "c-77"
    assert server.drop_connection(uid)
    with pytest.raises((websocket.WebSocketException, OSError)):
        agent.recv()
    again = TestAgent(server, identity)
    again.authenticate()
    again.send({"type": "response", "call_id": "c-77", "data": ok("late")})
    assert call.get(timeout=5) == ok("late")
    again.close()


def test_agent_calls_answered_at_top_level(server, agent, identity):
    agent.send({"type": "call", "call_id": "a1", "event": "get_service_env_vars",
                "data": {"service_uid": "s1"}})
    assert agent.recv() == {"type": "response", "call_id": "a1", "success": False,
                            "data": None, "error": "not configured"}
    reply = {"success": True, "data": {"A": "1"}, "error": ""}
    resp = admin(server).put(server.url + "/api/agents/%s/answers/get_service_env_vars"
                             % identity.server_uid, json=reply)
    assert resp.status_code == 200
    agent.send({"type": "call", "call_id": "a2", "event": "get_service_env_vars", "data": {}})
    assert agent.recv() == dict(reply, type="response", call_id="a2")
    agent.send({"type": "call", "call_id": "a3", "event": "what", "data": {}})
    assert agent.recv()["error"] == "unknown call"


def test_set_answer_python_api(server, agent, identity):
    server.set_answer(identity.server_uid, "get_github_repo",
                      {"success": True, "data": {"repo_url": "https://x/y", "access_token": "t"}})
    agent.send({"type": "call", "call_id": "g", "event": "get_github_repo", "data": {}})
    assert agent.recv()["data"]["repo_url"] == "https://x/y"


def test_invalid_frames_get_an_error_but_keep_the_connection(server, agent):
    for text in ("not json", "[1]", '{"no": "type"}'):
        agent.ws.send(text)
        assert agent.recv()["data"]["code"] == "invalid_message"
    agent.send({"type": "ping", "data": 5})
    assert agent.recv() == {"type": "pong", "data": 5}


def test_frames_are_recorded_in_order(server, agent, identity):
    events = [{"type": "event", "event": "e%d" % i, "data": {"i": i}} for i in range(5)]
    for frame in events:
        agent.send(frame)
    agent.send({"type": "ping"})
    agent.recv()
    assert server.received_frames(identity.server_uid) == events + [{"type": "ping"}]


def test_hardware_info_is_listed(server, agent, identity):
    info = {"hostname": "h1", "cpu_cores": 2}
    agent.send({"type": "event", "event": "register_hardware_info", "data": info})
    agent.send({"type": "ping"})
    agent.recv()
    listed = server.agents()[0]
    assert listed["hardware_info"] == info and listed["version"] == "9.9.9"
    assert listed["connected"] is True and listed["not_after"]


def test_cancel_is_sent_to_the_agent(server, agent, identity):
    resp = admin(server).post(server.url + "/api/agents/%s/cancel" % identity.server_uid,
                              json={"call_id": "c-9"})
    assert resp.status_code == 200
    assert agent.recv() == {"type": "cancel", "data": {"call_id": "c-9"}}


def test_oversized_frame_closes_with_1009(server, agent):
    # The limit is read per connection: lower it on the live socket.
    for st in server.hub.all_states():
        st.conn.ws.max_message_bytes = 1000
    agent.ws.send("x" * 2000)
    opcode, frame = agent.ws.recv_data_frame(True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(frame.data[:2], "big") == 1009


def test_server_sent_events(server, identity):
    lines, ready = [], threading.Event()
    session = admin(server)

    def read():
        resp = session.get(server.url + "/api/agents/%s/events" % identity.server_uid,
                           stream=True, timeout=10)
        ready.set()
        for line in resp.iter_lines(decode_unicode=True):
            lines.append(line)
            if line.startswith("data:") and "update_service_status" in line:
                return
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert ready.wait(5)
    gevent.sleep(0.1)
    client = TestAgent(server, identity)
    client.authenticate()
    frame = {"type": "event", "event": "update_service_status", "data": {"status": "running"}}
    client.send(frame)
    reader.join(5)
    assert "event: connected" in lines
    assert "event: update_service_status" in lines
    assert "data: " + json.dumps(frame) in lines
    client.close()


def test_backup_upload_over_mtls(server, identity):
    body = os.urandom(200_000)
    digest = hashlib.sha256(body).hexdigest()
    fields = {"backup_uid": "b-1", "service_uid": "s-1", "sha256": digest,
              "size": "999", "compressed_size": str(len(body)), "manifest": '{"a": 1}'}
    files = {"backup_file": ("backup_x.sql.zst", body, "application/zstd")}
    url = server.url + "/api/agent/backups/upload"
    cert = (identity.cert_file, identity.key_file)
    resp = HTTP.post(url, data=fields, files=files, cert=cert, verify=server.ca_file)
    assert resp.status_code in (200, 201), resp.text
    assert resp.json()["sha256"] == digest and resp.json()["size"] == len(body)
    with open(resp.json()["path"], "rb") as f:
        assert f.read() == body
    bad = dict(fields, sha256="0" * 64)
    resp = HTTP.post(url, data=bad, files=files, cert=cert, verify=server.ca_file)
    assert resp.status_code == 422
    resp = HTTP.post(url, data=fields, files=files, verify=server.ca_file)
    assert resp.status_code == 401


def test_update_manifest_is_served_verbatim(server):
    url = server.url + "/api/update/manifest"
    assert HTTP.get(url, verify=server.ca_file).status_code == 404
    os.makedirs(os.path.join(server.data_dir, "update"))
    raw = b'{"version": "1.2.3",  "sha256": "ab"}'
    for name, data in (("manifest.json", raw), ("manifest.json.sig", b"c2ln")):
        with open(os.path.join(server.data_dir, "update", name), "wb") as f:
            f.write(data)
    assert HTTP.get(url, verify=server.ca_file).content == raw
    assert HTTP.get(url + ".sig", verify=server.ca_file).content == b"c2ln"


def test_websocket_ping_is_answered(server, agent):
    agent.ws.ping(b"hi")
    opcode, frame = agent.ws.recv_data_frame(True)
    assert opcode == websocket.ABNF.OPCODE_PONG and frame.data == b"hi"


def test_stop_closes_agents_with_1001(server, agent):
    server.stop()
    opcode, frame = agent.ws.recv_data_frame(True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(frame.data[:2], "big") == 1001
