"""Security tests on the REAL socket (run as root): peers, frames, refusals, audit lines."""

import json
import logging
import os
import struct
import textwrap

import gevent
import gevent.subprocess
import pytest
from gevent import socket

from agent.protocol import ipc
from agent.supervisor.dispatch import OpDispatcher
from agent.supervisor.ipc_server import IpcServer
from tests.supervisor.fakes import RecordingSeam

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="peer credential tests need root")

# A peer in another process: stdlib only, runs under /usr/bin/python3 as any user.
PEER = textwrap.dedent("""
    import json, socket, struct, sys
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    try:
        s.connect(sys.argv[1])
    except OSError as e:
        print(json.dumps({"connect_error": e.errno})); sys.exit()
    body = json.dumps({"id": "p1", "op": "worker.status", "args": {"connected": True, "version": "9.9.9"}}).encode()
    data = b""
    try:
        s.sendall(struct.pack(">I", len(body)) + body)
    except BrokenPipeError:  # refused before we could write
        print(json.dumps({"reply": None})); sys.exit()
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:  # closed with our request unread
            break
        if not chunk:
            break
        data += chunk
        if len(data) >= 4 and len(data) >= 4 + struct.unpack(">I", data[:4])[0]:
            break
    print(json.dumps({"reply": json.loads(data[4:]) if data else None}))
""")


class Audit(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def decisions(self):
        return [r.decision for r in self.records]


@pytest.fixture
def audit():
    handler, logger = Audit(), logging.getLogger("agent.supervisor.audit")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.fixture
def server(host, test_user, tmp_path):
    host.seam = RecordingSeam()
    srv = IpcServer(host.cfg, OpDispatcher(host), host.seam, worker_uid=test_user.pw_uid, group_gid=test_user.pw_gid)
    srv.start()
    yield srv
    srv.stop(timeout=2)


def connect(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    return sock


def send(sock, message):
    sock.sendall(ipc.encode(message))


def recv(sock):
    """The next reply, or None when the server closed the connection."""
    header = _exact(sock, 4)
    if header is None:
        return None
    return json.loads(_exact(sock, struct.unpack(">I", header)[0]))


def _exact(sock, count):
    data = b""
    while len(data) < count:
        try:
            chunk = sock.recv(count - len(data))
        except ConnectionResetError:  # the server closed with our data unread
            return None
        if not chunk:
            return None
        data += chunk
    return data


def roundtrip(path, message):
    with connect(path) as sock:
        send(sock, message)
        return recv(sock)


def still_serving(path):
    reply = roundtrip(path, {"id": "alive", "op": "worker.status", "args": {"connected": False, "version": "1"}})
    return reply == {"id": "alive", "ok": True, "result": {}}


def run_peer(path, *prefix, user=None, group=None):
    argv = [*prefix, "/usr/bin/python3", "-c", PEER, path]
    done = gevent.subprocess.run(argv, capture_output=True, text=True, timeout=30, user=user, group=group,
                                 extra_groups=[] if user else None)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_socket_and_directory_modes(server, test_user):
    info = os.stat(server.path)
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (0, test_user.pw_gid, 0o660)
    info = os.stat(os.path.dirname(server.path))
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (0, test_user.pw_gid, 0o750)
    assert [n for n in os.listdir(os.path.dirname(server.path))] == ["supervisor.sock"]


def test_worker_user_is_served(server, host, test_user, audit):
    out = run_peer(server.path, user=test_user.pw_name, group=test_user.pw_gid)
    assert out["reply"] == {"id": "p1", "ok": True, "result": {}}
    assert host.worker_status["version"] == "9.9.9"
    record = audit.records[-1]
    assert (record.op, record.peer_uid, record.decision) == ("worker.status", test_user.pw_uid, "ok")
    assert record.peer_pid > 0 and record.duration_ms >= 0


def test_other_uid_cannot_reach_the_socket(server):
    out = run_peer(server.path, user="nobody", group="nogroup")
    assert out == {"connect_error": 13}  # EACCES: directory root:<group> 0750


def test_other_uid_refused_by_peer_credentials(server, host, audit):
    # open the file modes up so that SO_PEERCRED is the only barrier left
    os.chmod(os.path.dirname(server.path), 0o755)
    os.chmod(server.path, 0o666)
    out = run_peer(server.path, user="nobody", group="nogroup")
    assert out == {"reply": None}                 # closed without a reply
    assert host.worker_status == {}
    assert audit.records[-1].decision == "refused_peer" and audit.records[-1].peer_uid == 65534
    assert still_serving(server.path)


def test_root_from_another_pid_namespace_refused(server, host, audit):
    out = run_peer(server.path, "unshare", "--pid", "--fork")
    assert out == {"reply": None}
    assert audit.records[-1].decision == "refused_peer" and audit.records[-1].peer_uid == 0
    assert host.worker_status == {}


def test_root_from_own_namespace_accepted(server):
    assert still_serving(server.path)


def test_unknown_op(server, audit):
    reply = roundtrip(server.path, {"id": "1", "op": "os.system", "args": {"cmd": "id"}})
    assert reply["error"]["code"] == "unknown_op" and reply["id"] == "1"
    assert audit.records[-1].decision == "unknown_op" and audit.records[-1].op == "os.system"
    assert still_serving(server.path)


@pytest.mark.parametrize("args", [
    {"unit": "docker; reboot"}, {"unit": "$(reboot)"}, {"unit": "docker`id`"},
    {"unit": "../../etc/systemd/docker"}, {"unit": ["docker"]}, {},
])
def test_invalid_args_and_shell_metacharacters(server, args, audit):
    reply = roundtrip(server.path, {"id": "1", "op": "service.restart", "args": args})
    assert reply["error"]["code"] == "invalid_argument"
    assert server.seam.runs == []
    assert audit.records[-1].decision == "invalid_argument"
    assert still_serving(server.path)


def test_path_traversal_in_update_file_name(server):
    reply = roundtrip(server.path, {"id": "1", "op": "agent.update.install",
                                    "args": {"version": "1.0.0", "file_name": "../../../etc/shadow.deb"}})
    assert reply["error"] == {"code": "invalid_argument", "message": reply["error"]["message"], "field": "file_name"}


def test_oversize_frame(server, audit):
    with connect(server.path) as sock:
        sock.sendall(struct.pack(">I", ipc.MAX_FRAME + 1) + b"{" * 1000)
        reply = recv(sock)
        assert reply["error"]["code"] == "frame_too_large" and reply["id"] is None
        assert recv(sock) is None                 # then closed
    assert audit.records[-1].decision == "frame_too_large"
    assert still_serving(server.path)


@pytest.mark.parametrize("body", [b"not json", b"[1,2,3]", b"\xff\xfe", b"", b'{"a":' + b"[" * 100000])
def test_garbage_frames_close_the_connection(server, body, audit):
    with connect(server.path) as sock:
        sock.sendall(struct.pack(">I", len(body)) + body)
        assert recv(sock) is None
    assert audit.records[-1].decision == "garbage_frame"
    assert still_serving(server.path)


def test_bad_envelope_is_answered_and_connection_kept(server, audit):
    with connect(server.path) as sock:
        send(sock, {"id": "x" * 65, "op": "worker.status"})
        assert recv(sock)["error"]["code"] == "invalid_argument"
        send(sock, {"id": "2", "op": 5})
        assert recv(sock) == {"id": "2", "ok": False,
                              "error": {"code": "invalid_argument", "message": "op: must be a string"}}
        send(sock, {"id": "3", "op": "worker.status", "args": {"connected": True, "version": "1"}})
        assert recv(sock)["ok"] is True
    assert audit.decisions()[-3:] == ["invalid_argument", "invalid_argument", "ok"]


def test_rate_limit_excess(server, audit):
    with connect(server.path) as sock:
        for index in range(3):
            send(sock, {"id": str(index), "op": "system.reboot", "args": {}})
        replies = sorted((recv(sock) for _ in range(3)), key=lambda r: r["id"])
    assert [r["ok"] for r in replies] == [True, True, False]
    assert replies[2]["error"]["code"] == "rate_limited"
    assert server.seam.argvs == [["systemctl", "reboot"]] * 2
    assert audit.decisions()[-1] == "rate_limited"
    assert still_serving(server.path)


def test_disabled_op(host, server, audit):
    server.dispatcher.host.cfg = host.cfg.replace(pulseup_disabled_commands=("system.shutdown",))
    reply = roundtrip(server.path, {"id": "1", "op": "system.shutdown", "args": {}})
    assert reply["error"]["code"] == "permission_denied" and server.seam.runs == []
    assert audit.records[-1].decision == "permission_denied"


def test_pipelined_requests_answer_out_of_order(server, host):
    from agent.supervisor.ops import OPS, NoArguments, Op

    def slow(call, args):
        gevent.sleep(0.3)
        return {"slow": True}
    server.dispatcher.ops = dict(OPS, **{"test.slow": Op(NoArguments, slow, (5, 1.0), 5.0)})
    with connect(server.path) as sock:
        send(sock, {"id": "a", "op": "test.slow"})
        send(sock, {"id": "b", "op": "worker.status", "args": {"connected": True, "version": "1"}})
        assert [recv(sock)["id"], recv(sock)["id"]] == ["b", "a"]


def test_rebinding_replaces_a_stale_socket(server, host, test_user):
    server.stop(timeout=1)
    open(server.path, "w").close()                # a stale file from a crashed supervisor
    again = IpcServer(host.cfg, OpDispatcher(host), server.seam, worker_uid=test_user.pw_uid,
                      group_gid=test_user.pw_gid)
    again.start()
    try:
        assert still_serving(again.path)
    finally:
        again.stop(timeout=1)


def test_a_frame_that_stalls_is_dropped(server, audit, monkeypatch):
    monkeypatch.setattr("agent.supervisor.ipc_server.BODY_TIMEOUT", 0.3)
    with connect(server.path) as sock:
        sock.sendall(struct.pack(">I", 100) + b'{"id":')       # and nothing more
        assert recv(sock) is None                                # closed after BODY_TIMEOUT
    assert audit.records[-1].decision == "garbage_frame" and "within" in audit.records[-1].reason
    assert still_serving(server.path)


def test_stop_closes_idle_connections(host, server):
    with connect(server.path) as sock:
        assert still_serving(server.path)
        server.stop(timeout=1)
        assert recv(sock) is None                                # the idle peer sees the end
    assert server.readers.count == 0 and not os.path.exists(server.path)
