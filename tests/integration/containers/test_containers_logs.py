"""Logs on the test dockerd: fetch, database fetch, streams (batched, stopped without leaks),
and a 100,000-line stream that arrives complete and in order with flat memory."""
import gevent
import psutil
import pytest
from ctsupport import IDLE, dockerd_pid, wait_until

from agent.errors import AgentError

pytestmark = pytest.mark.integration

MANY = 100_000


def test_fetch_demultiplexes_stdout_and_stderr(run, make_app, uid):
    # Docker stamps each line when it reads the pipe: pauses make the interleaving certain
    container = make_app(uid, 1, script="i=0; while [ $i -lt 5 ]; do echo \"out $i\"; sleep 0.1; "
                                         "echo \"err $i\" >&2; sleep 0.1; i=$((i+1)); done; echo; exec sleep 3600")
    wait_until(lambda: b"err 4\n\n" in container.logs(), what="the container's output")
    reply = run("service.logs.fetch", {"service_uid": uid, "lines": 6})
    assert reply["container"] == container.name and reply["truncated"] is False
    # the last 6 entries in time order, the empty one dropped, no frame headers
    assert reply["logs"] == ["err 2", "out 3", "err 3", "out 4", "err 4"]
    everything = run("service.logs.fetch", {"service_uid": uid, "lines": 10000})["logs"]
    assert everything == [f"{kind} {i}" for i in range(5) for kind in ("out", "err")]
    future = run("service.logs.fetch", {"service_uid": uid, "since": "2999-01-01T00:00:00Z"})
    assert future["logs"] == []


def test_database_logs_fetch(run, make_container, uid):
    labels = {"pulseup.managed": "true", "pulseup.service_uid": uid, "pulseup.database_type": "postgresql"}
    container = make_container(f"pulseup-db-{uid}", labels, "echo 'database system is ready' >&2; exec sleep 3600")
    wait_until(lambda: container.logs(), what="database output")
    reply = run("database.logs.fetch", {"service_uid": uid, "lines": 10})
    assert reply == {"logs": ["database system is ready"], "container": container.name, "truncated": False}
    with pytest.raises(AgentError) as info:
        run("database.logs.fetch", {"service_uid": uid + "x"})
    assert info.value.code == "not_found"


def _engine_connections(docker_host):
    """Connections the engine has accepted on its API socket (accepted unix sockets carry
    the listening socket's path in /proc/net/unix)."""
    path = docker_host.removeprefix("unix://")
    sockets = psutil.Process(dockerd_pid(docker_host)).net_connections(kind="unix")
    return sum(1 for s in sockets if s.laddr == path)


def _log_readers(docker_host, container):
    """Open descriptors of the engine on the container's json-file log: one for the writer,
    one more per log reader (a follow stream keeps its reader open until it is closed)."""
    files = psutil.Process(dockerd_pid(docker_host)).open_files()
    return sum(1 for f in files if f.path.endswith(f"{container.id}-json.log"))


def test_streams_emit_batched_events_and_leak_nothing(run, services, make_app, docker_host, uid):
    containers = [make_app(f"{uid}s{n}", 1) for n in range(6)]
    wait_until(lambda: all(b"err 1" in c.logs() for c in containers), what="output")
    assert [_log_readers(docker_host, c) for c in containers] == [1] * 6
    for n in range(len(containers)):
        reply = run("service.logs.stream.start", {"service_uid": f"{uid}s{n}", "tail": 2})
        assert reply["container"] == containers[n].name and reply["start_time"].endswith("Z")
    logs = lambda: [e for e in services.events.named("container_log") if e["type"] == "log"]  # noqa: E731
    wait_until(lambda: {e["service_uid"] for e in logs()} == {f"{uid}s{n}" for n in range(6)}, what="log events")
    assert [_log_readers(docker_host, c) for c in containers] == [2] * 6
    during = _engine_connections(docker_host)
    first = [e for e in logs() if e["service_uid"] == f"{uid}s0"]
    assert {e["stream"] for e in first} <= {"stdout", "stderr"}
    assert all(line.startswith("out ") for e in first if e["stream"] == "stdout" for line in e["message"].split("\n"))
    assert all(line.startswith("err ") for e in first if e["stream"] == "stderr" for line in e["message"].split("\n"))

    for n in range(len(containers)):
        assert run("service.logs.stream.stop", {"service_uid": f"{uid}s{n}"})["message"] == "Log streaming stopped"
    assert services.container_logs.active() == []
    wait_until(lambda: [_log_readers(docker_host, c) for c in containers] == [1] * 6, what="log readers to close")
    # every follow connection is closed (pooled keep-alive connections may stay)
    wait_until(lambda: _engine_connections(docker_host) <= during - len(containers), what="connections to close")
    infos = [e["message"] for e in services.events.named("container_log") if e["type"] == "info"]
    assert infos.count("Log streaming stopped") == len(containers)
    with pytest.raises(AgentError) as info:
        run("service.logs.stream.stop", {"service_uid": f"{uid}s0"})
    assert info.value.code == "not_found"


def test_stream_follows_a_restart_of_the_container(run, services, make_app, uid):
    container = make_app(uid, 1)
    run("service.logs.stream.start", {"service_uid": uid, "tail": 0})
    container.restart(timeout=5)
    marks = lambda: [e for e in services.events.named("container_log") if e["type"] == "log"]  # noqa: E731
    start_count = len(marks())
    wait_until(lambda: len(marks()) > start_count + 2, what="lines after the restart")
    run("service.logs.stream.stop", {"service_uid": uid})


class CountingSink:
    """Checks order while counting, keeping nothing: the test's own memory stays flat."""

    def __init__(self):
        self.next, self.events, self.errors = 1, 0, []

    def emit(self, event, data):
        if event != "container_log" or data["type"] != "log":
            return
        self.events += 1
        for line in data["message"].split("\n"):
            if int(line) != self.next:
                self.errors.append((self.next, line))
            self.next = int(line) + 1


def test_a_100k_line_stream_arrives_complete_in_order_with_flat_memory(run, services, make_app, uid):
    container = make_app(uid, 1, script=f"while [ ! -f /tmp/go ]; do sleep 0.05; done; seq 1 {MANY}; {IDLE}")
    sink = CountingSink()
    services.events = sink
    process = psutil.Process()
    run("service.logs.stream.start", {"service_uid": uid, "tail": 0})
    gevent.sleep(0.3)
    rss_before = process.memory_info().rss
    container.exec_run(["touch", "/tmp/go"])
    peak = rss_before
    with gevent.Timeout(60, AssertionError(f"only {sink.next - 1} lines arrived")):
        while sink.next <= MANY:
            peak = max(peak, process.memory_info().rss)
            gevent.sleep(0.05)
    run("service.logs.stream.stop", {"service_uid": uid})
    assert sink.errors == []
    assert sink.events < MANY / 20               # batched: many lines per event
    # generous: the stream holds at most one 64 KiB batch plus one read chunk
    assert peak - rss_before < 64 * 1024 * 1024
