"""SupervisorClient against the real IPC server in-process, and a scripted fake server."""

import os
import time

import gevent
import pytest
from gevent import socket
from gevent.server import StreamServer

from agent import config
from agent.errors import AgentError
from agent.protocol import ipc
from agent.supervisor.dispatch import OpDispatcher
from agent.supervisor.ipc_server import IpcServer
from agent.supervisor.ops import OPS, Host, NoArguments, Op
from agent.supervisor.seam import HostSeam, RunResult
from agent.worker.ipc_client import SupervisorClient


class Seam(HostSeam):
    def __init__(self):
        self.runs, self.result = [], RunResult(0, "", "")

    def run(self, argv, timeout=None, env=None):
        self.runs.append(list(argv))
        return self.result


def _slow(call, args):
    gevent.sleep(0.3)
    return {"slow": True}


def _precondition(call, args):
    raise AgentError("failed_precondition", "not today")


TEST_OPS = dict(OPS, **{"test.slow": Op(NoArguments, _slow, (50, 1.0), 5.0),
                        "test.precondition": Op(NoArguments, _precondition, (50, 1.0), 5.0)})


@pytest.fixture
def cfg(tmp_path):
    return config.defaults().replace(supervisor_socket=str(tmp_path / "run" / "s.sock"),
                                     pulseup_disabled_commands=("system.shutdown",))


@pytest.fixture
def make_server(cfg):
    servers = []

    def make():
        seam = Seam()
        server = IpcServer(cfg, OpDispatcher(Host(cfg, seam), ops=TEST_OPS), seam, worker_uid=os.getuid())
        server.start()
        servers.append(server)
        return server
    yield make
    for server in servers:
        server.stop(timeout=1)


@pytest.fixture
def client(cfg):
    client = SupervisorClient(cfg.supervisor_socket, backoff_initial=0.05, backoff_max=0.2)
    yield client
    client.close()


def test_call_ok(make_server, client):
    server = make_server()
    assert client.call("worker.status", {"connected": True, "version": "1.2.3"}) == {}
    assert server.dispatcher.host.worker_status["version"] == "1.2.3"
    assert client.call("system.reboot") == {"requested": "reboot"}
    assert server.seam.runs == [["systemctl", "reboot"]]


@pytest.mark.parametrize("op,args,code", [
    ("system.shutdown", None, "permission_denied"),
    ("service.restart", {"unit": "ssh"}, "invalid_argument"),
    ("no.such.op", None, "unimplemented"),
    ("test.precondition", None, "failed_precondition"),
])
def test_error_mapping(make_server, client, op, args, code):
    make_server()
    with pytest.raises(AgentError) as info:
        client.call(op, args)
    assert info.value.code == code


def test_invalid_argument_keeps_field(make_server, client):
    make_server()
    with pytest.raises(AgentError) as info:
        client.call("service.restart", {"unit": "ssh"})
    assert info.value.field == "unit"


def test_command_failed_keeps_exit_code(make_server, client):
    server = make_server()
    server.seam.result = RunResult(5, "", "boom")
    with pytest.raises(AgentError) as info:
        client.call("service.restart", {"unit": "docker"})
    assert info.value.code == "command_failed"
    assert info.value.details == {"exit_code": 5, "stderr_tail": "boom"}


def test_rate_limited_is_unavailable(make_server, client):
    make_server()
    client.call("system.reboot")
    client.call("system.reboot")
    with pytest.raises(AgentError) as info:
        client.call("system.reboot")
    assert info.value.code == "unavailable" and "rate" in info.value.message


def test_unreachable_then_reconnects(make_server, client):
    with pytest.raises(AgentError) as info:
        client.call("worker.status", {"connected": True, "version": "1"})
    assert info.value.code == "unavailable" and info.value.message.startswith("supervisor is not reachable")
    make_server()
    deadline = time.monotonic() + 5
    while True:
        try:
            assert client.call("worker.status", {"connected": True, "version": "1"}) == {}
            break
        except AgentError as exc:
            assert exc.code == "unavailable" and time.monotonic() < deadline
            gevent.sleep(0.05)


def test_backoff_window_fails_fast(cfg):
    client = SupervisorClient(cfg.supervisor_socket, backoff_initial=30, backoff_max=30)
    for _ in range(2):
        with pytest.raises(AgentError):
            client.call("worker.status", timeout=5)
    started = time.monotonic()
    with pytest.raises(AgentError) as info:
        client.call("worker.status", timeout=5)
    assert info.value.code == "unavailable" and time.monotonic() - started < 1.0
    client.close()


def test_supervisor_restart_is_survived(make_server, client):
    server = make_server()
    client.call("worker.status", {"connected": True, "version": "1"})
    server.stop(timeout=1)
    gevent.sleep(0.1)
    with pytest.raises(AgentError) as info:
        client.call("worker.status", {"connected": True, "version": "1"})
    assert info.value.code == "unavailable"
    make_server()
    gevent.sleep(0.3)  # past the (short) backoff
    assert client.call("worker.status", {"connected": True, "version": "2"}) == {}


def test_pipelined_calls_are_correlated(make_server, client):
    make_server()
    slow = gevent.spawn(client.call, "test.slow")
    fast = [gevent.spawn(client.call, "worker.status", {"connected": True, "version": str(i)}) for i in range(5)]
    gevent.joinall(fast, timeout=5, raise_error=True)
    assert not slow.ready()
    assert all(g.value == {} for g in fast)
    assert slow.get(timeout=5) == {"slow": True}


@pytest.fixture
def fake_server(cfg):
    """A server that reads one request, then does what the test says."""
    behaviour = {}

    def handle(sock, address):
        header = sock.recv(4)
        sock.recv(ipc.body_length(header))
        behaviour["action"](sock)

    os.makedirs(os.path.dirname(cfg.supervisor_socket), exist_ok=True)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(cfg.supervisor_socket)
    listener.listen(5)
    server = StreamServer(listener, handle)
    server.start()
    yield behaviour
    server.stop(timeout=1)


def test_no_reply_is_deadline_exceeded(fake_server, client):
    fake_server["action"] = lambda sock: gevent.sleep(10)
    started = time.monotonic()
    with pytest.raises(AgentError) as info:
        client.call("system.update_packages", timeout=0.3)
    assert info.value.code == "deadline_exceeded"
    assert time.monotonic() - started < 3.0


def test_connection_lost_mid_call_is_unavailable(fake_server, client):
    fake_server["action"] = lambda sock: sock.close()
    with pytest.raises(AgentError) as info:
        client.call("system.reboot", timeout=5)
    assert info.value.code == "unavailable"


def test_garbage_reply_is_unavailable(fake_server, client):
    fake_server["action"] = lambda sock: sock.sendall(b"\0\0\0\x03abc")
    with pytest.raises(AgentError) as info:
        client.call("system.reboot", timeout=5)
    assert info.value.code == "unavailable"


def test_frame_too_large_request_never_sent(make_server, client):
    make_server()
    with pytest.raises(AgentError) as info:
        client.call("worker.status", {"blob": "x" * ipc.MAX_FRAME})
    assert info.value.code == "invalid_argument"
    assert client.call("worker.status", {"connected": True, "version": "1"}) == {}


def test_closed_client_refuses(make_server, client):
    make_server()
    client.close()
    with pytest.raises(AgentError) as info:
        client.call("worker.status")
    assert info.value.code == "unavailable"
