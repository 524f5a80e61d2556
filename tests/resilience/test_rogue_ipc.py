"""A rogue peer on the supervisor's socket (docs/protocol.md, "Supervisor IPC"), on a real socket:
random byte streams, stalled frames and unread pipelined floods never crash the IPC server,
never hang a connection, and never keep other peers from being answered. (Peer credential
refusals, oversize and garbage frames have their own tests in tests/supervisor/.)"""

import os
import socket
import struct
import tempfile

import gevent
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from agent import config
from agent.protocol import ipc
from agent.supervisor.dispatch import OpDispatcher
from agent.supervisor.ipc_server import IpcServer
from agent.supervisor.ops import Host, Roots
from tests.supervisor.fakes import RecordingSeam

STATUS = {"op": "worker.status", "args": {"connected": True, "version": "1.0.0"}}


@pytest.fixture(scope="module")
def server():
    work = tempfile.mkdtemp(prefix="pulseup-rogue-")
    cfg = config.defaults().replace(state_dir=f"{work}/state", supervisor_socket=f"{work}/run/supervisor.sock")
    seam = RecordingSeam()
    roots = Roots(logs=f"{work}/log", logs_excluded=f"{work}/log/pulseup", temp=f"{work}/tmp",
                  uninstall_flag=f"{work}/flag", uninstall_argv=("/bin/false",))
    # this test's own uid is the "worker": the peer check lets it in, root or not
    srv = IpcServer(cfg, OpDispatcher(Host(cfg, seam, roots)), seam, worker_uid=os.getuid())
    srv.start()
    yield srv
    srv.stop(timeout=2)


def connect(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    return sock


def read_all(sock):
    """Everything the server sends until it closes (a hang would hit the socket timeout)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def read_replies(sock, count):
    data = b""
    while len(replies(data)) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return replies(data)


def replies(data):
    """The complete reply frames at the start of ``data``."""
    out = []
    while len(data) >= 4 and len(data) >= 4 + struct.unpack(">I", data[:4])[0]:
        length = struct.unpack(">I", data[:4])[0]
        out.append(ipc.decode(data[4:4 + length]))
        data = data[4 + length:]
    return out


def roundtrip(path, rid="alive"):
    with connect(path) as sock:
        sock.sendall(ipc.encode({"id": rid, **STATUS}))
        return read_replies(sock, 1)


garbage = st.binary(max_size=64)
framed = st.builds(lambda body, extra: struct.pack(">I", len(body) + extra) + body,
                   st.binary(max_size=64) | st.sampled_from([b"{}", b'{"id":"x"}', b'{"id":1,"op":[]}', b"[]"]),
                   st.sampled_from([0, 0, 0, 5]))


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture], derandomize=True,
          max_examples=max(20, settings.default.max_examples // 5))
@given(st.lists(garbage | framed, min_size=1, max_size=4))
def test_random_streams_are_answered_or_closed(server, chunks):
    with connect(server.path) as sock:
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break      # the server already closed on a garbage frame
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        for reply in replies(read_all(sock)):          # whatever came back is a valid reply
            assert set(reply) >= {"id", "ok"}


def test_server_survives_the_fuzzing_and_answers(server):
    assert roundtrip(server.path) == [{"id": "alive", "ok": True, "result": {}}]


def test_stalled_frame_does_not_block_other_peers(server):
    stalled = connect(server.path)
    stalled.sendall(struct.pack(">I", 100) + b'{"id": "st')      # ... and nothing more
    try:
        with gevent.Timeout(5):
            assert roundtrip(server.path, "other") == [{"id": "other", "ok": True, "result": {}}]
    finally:
        stalled.close()


def test_unread_pipelined_flood_then_abrupt_close(server):
    flood = connect(server.path)
    flood.sendall(b"".join(ipc.encode({"id": str(n), **STATUS}) for n in range(500)))
    flood.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    flood.close()                                  # RST with the replies unread
    with gevent.Timeout(10):
        assert roundtrip(server.path, "after") == [{"id": "after", "ok": True, "result": {}}]
    with connect(server.path) as sock:             # and a well-behaved pipelining peer is fine
        sock.sendall(b"".join(ipc.encode({"id": str(n), **STATUS}) for n in range(50)))
        assert sorted(int(r["id"]) for r in read_replies(sock, 50)) == list(range(50))


def test_peer_that_half_closes_still_gets_its_replies(server):
    with connect(server.path) as sock:
        sock.sendall(b"".join(ipc.encode({"id": str(n), **STATUS}) for n in range(3)))
        sock.shutdown(socket.SHUT_WR)
        assert sorted(int(r["id"]) for r in replies(read_all(sock))) == [0, 1, 2]
