import json
import struct

import gevent
import gevent.queue
import pytest

from agent.errors import AgentError
from agent.handlers import logs as log_handlers
from agent.services.context import CallContext
from agent.handlers.registry import Registry
from agent.protocol.fields import load_request
from agent.services.app import logs as docker_logs
from agent.services.app.log_streams import LogStreams, _batches
from agent.services.app.logs import LogReader, fit, parse_since, read_tail
from tests.unit.test_docker_fakes import (  # noqa: F401 (fixtures)
    app, cfg, database, docker_service, fake_client, services)


def frame(kind, payload):
    return struct.pack(">BxxxL", kind, len(payload)) + payload


class FakeResponse:
    """A streamed HTTP response: chunks from a list, then from a queue (None ends it)."""

    def __init__(self, chunks=(), live=False, status=200):
        self.chunks = list(chunks)
        self.queue = gevent.queue.Queue() if live else None
        self.closed = False
        self.status_code = status

    def raise_for_status(self):
        pass

    def iter_content(self, chunk_size=None):
        yield from self.chunks
        while self.queue is not None and not self.closed:
            item = self.queue.get()
            if item is None:
                return
            yield item

    def close(self):
        self.closed = True
        if self.queue is not None:
            self.queue.put(None)


@pytest.fixture
def responses(fake_client):
    """Responses handed out by api.get, in order; requests are recorded."""
    queue, requests_ = [], []
    fake_client.api.base_url = "http+docker://localhost"

    def get(url, params=None, stream=False, timeout=None):
        requests_.append((url, dict(params), timeout))
        return queue.pop(0)

    fake_client.api.get = get
    return queue, requests_


def test_demux_splits_streams_across_chunk_boundaries(docker_service, fake_client, responses):
    container = app(fake_client, "web", 1)
    data = frame(1, b"out one\nout ") + frame(2, b"err one\n") + frame(1, b"two\n") + frame(2, b"tail")
    # deliver in awkward pieces: mid-header and mid-payload
    responses[0].append(FakeResponse([data[:3], data[3:13], data[13:40], data[40:]]))
    reader = LogReader(docker_service, container, follow=False, tail=5)
    lines = [(s, bytes(line)) for s, line in reader.lines()]
    assert lines == [("stdout", b"out one"), ("stderr", b"err one"), ("stdout", b"out two"), ("stderr", b"tail")]
    url, params, timeout = responses[1][0]
    assert url == f"http+docker://localhost/v1.41/containers/{container.id}/logs"
    assert params == {"stdout": 1, "stderr": 1, "follow": 0, "tail": 5} and timeout[1] is not None


def test_follow_has_no_read_timeout_and_since_is_passed(docker_service, fake_client, responses):
    container = app(fake_client, "web", 1)
    responses[0].append(FakeResponse([]))
    LogReader(docker_service, container, follow=True, tail="all", since=1700000000.25).close()
    _, params, timeout = responses[1][0]
    assert params["since"] == "1700000000.250000000" and params["follow"] == 1 and timeout[1] is None


def test_tty_container_is_raw_stdout(docker_service, fake_client, responses):
    container = app(fake_client, "web", 1)
    container.attrs["Config"]["Tty"] = True
    responses[0].append(FakeResponse([b"\x01\x00 raw\r\n", b"x\n"]))
    lines = list(LogReader(docker_service, container).lines())
    assert lines == [("stdout", b"\x01\x00 raw"), ("stdout", b"x")]


def test_long_lines_are_cut_at_character_boundaries(docker_service, fake_client, responses, monkeypatch):
    monkeypatch.setattr(docker_logs, "MAX_LINE_BYTES", 10)
    container = app(fake_client, "web", 1)
    text = ("é" * 8 + "\n").encode()     # 16 bytes of two-byte characters
    responses[0].append(FakeResponse([frame(1, text)]))
    pieces = [line for _, line in LogReader(docker_service, container).lines()]
    assert b"".join(pieces) == text[:-1] and all(len(p) <= 10 for p in pieces)
    assert [p.decode() for p in pieces] == ["é" * 5, "é" * 3]


def test_read_tail_drops_empty_lines_and_keeps_the_newest_within_the_frame(docker_service, fake_client, responses):
    container = app(fake_client, "web", 1)
    body = b"".join(frame(1 + i % 2, f"line {i}\n\n".encode()) for i in range(5))
    responses[0].append(FakeResponse([body]))
    reply = read_tail(docker_service, container, 3)
    assert reply == {"logs": ["line 2", "line 3", "line 4"], "container": container.name, "truncated": False}


def test_fit_drops_oldest_lines_to_the_budget():
    lines = ["a" * 100] * 10 + ["\x00" * 10]
    kept, truncated = fit(lines, 500)
    assert truncated and kept[-1] == "\x00" * 10
    assert sum(len(json.dumps(line)) + 1 for line in kept) <= 500
    assert fit(["x"], 500) == (["x"], False)


def test_parse_since():
    assert parse_since("10m", now=1000.0) == 400.0
    assert parse_since("2024-01-02T03:04:05Z") == 1704164645.0
    for bad in ("yesterday", "2024-01-02T03:04:05+02:00", "2024-13-02T03:04:05Z"):
        with pytest.raises(ValueError):
            parse_since(bad)


def call(name, services, data):
    registry = Registry()
    log_handlers.register(registry)
    command = registry.get(name)
    return command.func(CallContext(services, name), load_request(command.schema, data))


def test_fetch_uses_active_then_legacy_container(services, fake_client, responses):
    legacy = fake_client.containers.add("pulseup-app-web", labels={})
    responses[0].append(FakeResponse([frame(1, b"legacy\n")]))
    assert call("service.logs.fetch", services, {"service_uid": "web"})["container"] == legacy.name
    active = app(fake_client, "web", 3)
    responses[0].append(FakeResponse([frame(1, b"hi\n")]))
    reply = call("service.logs.fetch", services, {"service_uid": "web", "lines": 7, "since": "1h"})
    assert reply["container"] == active.name and reply["logs"] == ["hi"]
    assert responses[1][-1][1]["tail"] == 7 and "since" in responses[1][-1][1]


def test_fetch_validation_and_not_found(services):
    with pytest.raises(AgentError) as info:
        call("service.logs.fetch", services, {"service_uid": "web", "lines": 10001})
    assert info.value.code == "invalid_argument" and info.value.field == "lines"
    with pytest.raises(AgentError) as info:
        call("service.logs.fetch", services, {"service_uid": "web", "since": "soon"})
    assert info.value.field == "since"
    with pytest.raises(AgentError) as info:
        call("service.logs.fetch", services, {"service_uid": "web"})
    assert info.value.code == "not_found"
    with pytest.raises(AgentError) as info:
        call("database.logs.fetch", services, {"service_uid": "web"})
    assert info.value.code == "not_found"


def test_database_logs_fetch(services, fake_client, responses):
    db = database(fake_client, "pg")
    responses[0].append(FakeResponse([frame(2, b"ready to accept connections\n")]))
    reply = call("database.logs.fetch", services, {"service_uid": "pg"})
    assert reply == {"logs": ["ready to accept connections"], "container": db.name, "truncated": False}


# -- streams --------------------------------------------------------------------------

def test_batches_keep_order_and_size():
    pending = [("stdout", b"a"), ("stdout", b"b"), ("stderr", b"c"), ("stdout", b"d")]
    assert list(_batches(pending)) == [("stdout", [b"a", b"b"]), ("stderr", [b"c"]), ("stdout", [b"d"])]
    big = [("stdout", b"x" * 40000)] * 3
    assert [len(lines) for _, lines in _batches(big)] == [1, 1, 1]


def log_events(services):
    return services.events.named("container_log")


def wait_for(predicate, timeout=5):
    with gevent.Timeout(timeout):
        while not predicate():
            gevent.sleep(0.01)


def test_stream_batches_lines_and_stops_cleanly(services, fake_client, responses):
    container = app(fake_client, "web", 1)
    live = FakeResponse(live=True)
    responses[0].append(live)
    streams = LogStreams(services, flush_interval=0.02)
    reply = streams.start("web", tail=5)
    assert reply["container"] == container.name and reply["message"] == "Log streaming started"
    live.queue.put(b"".join(frame(1, f"o{i}\n".encode()) for i in range(50)) + frame(2, b"e\n"))
    wait_for(lambda: any(e["type"] == "log" and e["stream"] == "stderr" for e in log_events(services)))
    streams.stop("web")
    kinds = [(e["type"], e.get("stream")) for e in log_events(services)]
    assert kinds == [("info", None), ("log", "stdout"), ("log", "stderr"), ("info", None)]
    assert log_events(services)[1]["message"] == "\n".join(f"o{i}" for i in range(50))
    assert log_events(services)[-1]["message"] == "Log streaming stopped"
    assert isinstance(log_events(services)[1]["timestamp"], int)
    assert live.closed and streams.active() == []
    assert responses[1][0][1]["tail"] == 5 and responses[1][0][1]["follow"] == 1
    with pytest.raises(AgentError) as info:
        streams.stop("web")
    assert info.value.code == "not_found"


def test_a_new_start_replaces_the_stream(services, fake_client, responses):
    app(fake_client, "web", 1)
    first, second = FakeResponse(live=True), FakeResponse(live=True)
    responses[0].extend([first, second])
    streams = LogStreams(services, flush_interval=0.02)
    streams.start("web")
    streams.start("web")
    assert first.closed and not second.closed and streams.active() == ["web"]
    messages = [e["message"] for e in log_events(services) if e["type"] == "info"]
    assert "Log stream replaced by a new request" in messages
    streams.close()
    assert second.closed


def test_stream_switches_to_the_new_active_container_after_a_swap(services, fake_client, responses):
    old = app(fake_client, "web", 1)
    first, second = FakeResponse(live=True), FakeResponse(live=True)
    responses[0].extend([first, second])
    streams = LogStreams(services, flush_interval=0.02)
    streams.start("web")
    new = app(fake_client, "web", 2)
    old.set_state("exited")
    first.queue.put(None)                          # the old container's stream ends
    wait_for(lambda: any("switched" in e["message"] for e in log_events(services)))
    second.queue.put(frame(1, b"from new\n"))
    wait_for(lambda: any(e["message"] == "from new" for e in log_events(services)))
    assert log_events(services)[-1]["container_name"] == new.name
    url, params, _ = responses[1][1]
    assert new.id in url and params["tail"] == "all"
    streams.close()


def test_stream_ends_at_max_duration(services, fake_client, responses):
    app(fake_client, "web", 1)
    live = FakeResponse(live=True)
    responses[0].append(live)
    streams = LogStreams(services, flush_interval=0.01)
    streams.start("web", max_duration=0.05)
    wait_for(lambda: streams.active() == [])
    assert log_events(services)[-1]["message"] == "Log stream ended: maximum duration reached"
    assert live.closed


def test_stream_start_without_active_container_is_not_found(services):
    with pytest.raises(AgentError) as info:
        LogStreams(services).start("web")
    assert info.value.code == "not_found"


def test_a_flood_is_flushed_by_the_reader_in_bounded_events(services, fake_client, responses):
    app(fake_client, "web", 1)
    live = FakeResponse(live=True)
    responses[0].append(live)
    streams = LogStreams(services, flush_interval=5.0)   # only size-triggered flushes
    streams.start("web")
    line = b"y" * 999
    live.queue.put(b"".join(frame(1, line + b"\n") for _ in range(200)))
    wait_for(lambda: sum(e["message"].count("y" * 999) for e in log_events(services) if e["type"] == "log") >= 195)
    sizes = [len(e["message"]) for e in log_events(services) if e["type"] == "log"]
    assert max(sizes) <= 64 * 1024 and len(sizes) >= 3
    streams.close()


def test_stream_ends_without_a_connection(services, fake_client, responses, monkeypatch):
    from agent.services.app import log_streams as docker_log_streams

    monkeypatch.setattr(docker_log_streams, "DISCONNECTED_LIMIT", 0.05)
    app(fake_client, "web", 1)
    live = FakeResponse(live=True)
    responses[0].append(live)
    state = {"state": "connected"}
    services.status = lambda: {"connection": dict(state)}
    streams = LogStreams(services, flush_interval=0.01)
    streams.start("web")
    gevent.sleep(0.1)
    assert streams.active() == ["web"]             # connected: it keeps going
    state["state"] = "disconnected"
    wait_for(lambda: streams.active() == [])
    assert log_events(services)[-1]["message"] == "Log stream ended: no connection to the control plane"
    assert live.closed
