"""Deployment logs, steps, fetch and the log streams (docs/commands.md, "Paths and files",
"Logs and stats")."""
import json
import re

import gevent
import pytest

from agent import config, log
from agent.errors import AgentError
from agent.services import EventSink
from agent.services.deploy import fetch as fetchmod
from agent.services.deploy import logs as logsmod
from agent.services.deploy import streams

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z - (INFO|WARN|ERROR) - .*$")


def test_line_format_and_redaction(tmp_path):
    dlog = logsmod.DeploymentLog(str(tmp_path), "svc", "dep")
    log.register_secret("hunter2-secret")
    try:
        dlog.build("step one\nuses hunter2-secret")
        dlog.deploy("oops", "ERROR")
    finally:
        log.forget_secret("hunter2-secret")
    build = (tmp_path / "dep_build.log").read_text().splitlines()
    assert len(build) == 2 and all(LINE.match(line) for line in build)
    assert build[1].endswith(" - INFO - uses ***")
    assert (tmp_path / "dep_deploy.log").read_text().split(" - ", 1)[1] == "ERROR - oops\n"
    assert (tmp_path / "svc_build.log").read_text().splitlines() == build


def test_service_copy_rotates(tmp_path, monkeypatch):
    monkeypatch.setattr(logsmod, "SERVICE_LOG_MAX", 400)
    for n in range(14):      # ~190 bytes a line: a rotation every second line
        logsmod.DeploymentLog(str(tmp_path), "svc", f"dep{n}").build("x" * 150)
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("svc_build"))
    assert names == ["svc_build.log", "svc_build.log.1", "svc_build.log.2", "svc_build.log.3"]


def test_steps_file(tmp_path):
    steps = logsmod.Steps(str(tmp_path), "dep", logsmod.DeploymentLog(str(tmp_path), "svc", "dep"))
    steps.start("fetch_source", "Fetch", log_type="build")
    steps.log("fetch_source", "cloned")
    steps.finish("fetch_source", metadata={"deployment_version": 1})
    steps.start("build_image")
    steps.fail_running("boom")
    saved = logsmod.read_steps(str(tmp_path), "dep")
    assert [(s["id"], s["status"]) for s in saved] == [("fetch_source", "success"), ("build_image", "error")]
    assert saved[0]["logs"][0]["message"] == "cloned" and saved[0]["metadata"] == {"deployment_version": 1}
    assert saved[1]["error"] == "boom" and "completed_at" in saved[1]
    assert "cloned" in (tmp_path / "dep_build.log").read_text()


def _cfg(tmp_path):
    return config.defaults().replace(deployment_log_dir=str(tmp_path))


class _NoDocker:
    def list_containers(self, labels):
        return []


def _write_lines(tmp_path, dep, kind, lines):
    with open(tmp_path / f"{dep}_{kind}.log", "w") as handle:
        for stamp, text in lines:
            handle.write(f"{stamp} - INFO - {text}\n")


def test_fetch_lines_types_since_and_unknown(tmp_path):
    _write_lines(tmp_path, "d", "build", [(f"2026-01-01T00:00:{n:02d}.000000Z", f"b{n}") for n in range(20)])
    _write_lines(tmp_path, "d", "deploy", [("2026-01-01T00:01:00.000000Z", "d0")])
    reply = fetchmod.fetch(_cfg(tmp_path), _NoDocker(), "svc", "d", lines=5)
    assert reply["logs"].splitlines()[-1].endswith("b19") and reply["lines_returned"] == 5
    assert reply["logs"] == reply["deployment_logs"] and not reply["truncated"]
    both = fetchmod.fetch(_cfg(tmp_path), _NoDocker(), "svc", "d", lines=-1, log_type="all")
    assert both["lines_returned"] == 21 and both["logs"].endswith("d0")
    recent = fetchmod.fetch(_cfg(tmp_path), _NoDocker(), "svc", "d", lines=0, since="2026-01-01T00:00:17Z",
                            log_type="all")
    assert [line[-3:].strip(" -") for line in recent["logs"].splitlines()] == ["b18", "b19", "d0"]
    with pytest.raises(AgentError) as info:
        fetchmod.fetch(_cfg(tmp_path), _NoDocker(), "svc", "nope")
    assert info.value.code == "not_found"


def test_tail_reads_backwards_and_truncates_to_budget(tmp_path):
    path = tmp_path / "big.log"
    path.write_text("".join(f"line {n:06d} " + "x" * 90 + "\n" for n in range(20000)))
    lines, truncated = fetchmod.tail_lines(str(path), 10)
    assert len(lines) == 10 and lines[-1].startswith("line 019999") and not truncated
    lines, truncated = fetchmod.tail_lines(str(path), None, budget=50_000)
    assert truncated and lines[-1].startswith("line 019999")
    assert sum(len(line) + 1 for line in lines) <= 50_000 and lines[0].startswith("line ")


@pytest.mark.parametrize("data,more,expected", [
    (b"ab\ncd", True, b"ab\n"), (b"ab\ncd", False, b"ab\ncd"), (b"abcd", True, b"abcd"),
    ("x\u00e9".encode()[:-1], False, b"x"), ("\u20ac".encode()[:2], False, b""),
    ("\u20ac".encode(), False, "\u20ac".encode()), ("a\U0001F600".encode()[:-1], False, b"a"),
])
def test_cut_chunk(data, more, expected):
    assert streams.cut_chunk(data, more) == expected


class _Owner:
    def __init__(self, tmp_path, running=True):
        self.cfg = _cfg(tmp_path)
        self.events = []
        self.services = type("S", (), {})()
        self.services.events = EventSink()
        self.services.events.target = lambda event, data: self.events.append(data)
        self.services.status = None
        self.services.spawn = lambda name, func: gevent.spawn(func)
        self.running = running

    def is_running(self, deployment_uid):
        return self.running


def test_stream_chunks_resume_reset_and_end(tmp_path):
    owner = _Owner(tmp_path)
    text = "".join(f"2026-01-01T00:00:00.000000Z - INFO - {n:05d} " + "y" * 200 + "\n" for n in range(700))
    (tmp_path / "dep_build.log").write_text(text)
    manager = streams.DeployLogStreams(owner)
    manager.start("dep", "svc", {"build": 100}, include_steps=True, interval=0.05, idle_timeout=60)
    gevent.sleep(0.2)
    chunks = [c for c in owner.events if c.get("chunk")]
    assert all(c["size"] <= streams.CHUNK_BYTES for c in chunks) and len(chunks) >= 3
    assert chunks[0]["start_offset"] == 100
    assert all(a["end_offset"] == b["start_offset"] for a, b in zip(chunks, chunks[1:]))
    assert chunks[-1]["end_offset"] == len(text.encode())
    assert [c["sequence"] for c in owner.events] == list(range(1, len(owner.events) + 1))
    assert all(c["chunk"].endswith("\n") for c in chunks)
    (tmp_path / "dep_build.log").write_text("short\n")          # replaced: restart from 0
    (tmp_path / "dep_steps.json").write_text(json.dumps([{"id": "initialize", "status": "success"}]))
    gevent.sleep(0.2)
    reset = [c for c in owner.events if c.get("reset")]
    assert reset and reset[0]["start_offset"] == 0 and reset[0]["chunk"] == "short\n"
    assert any(c.get("steps") == [{"id": "initialize", "status": "success"}] for c in owner.events)
    owner.running = False                                     # terminal + two quiet intervals: final
    with gevent.Timeout(5):
        while not owner.events[-1].get("final"):
            gevent.sleep(0.05)
    with pytest.raises(AgentError) as info:
        manager.stop("dep")
    assert info.value.code == "not_found"


def test_stream_waits_while_disconnected_and_stop_sends_final(tmp_path):
    owner = _Owner(tmp_path)
    state = {"state": "disconnected"}
    owner.services.status = lambda: {"connection": state}
    (tmp_path / "dep_deploy.log").write_text("a line\n")
    manager = streams.DeployLogStreams(owner)
    reply = manager.start("dep", "svc", {}, interval=0.05, idle_timeout=60)
    assert reply["offsets"] == {"build": 0, "deploy": 0}
    gevent.sleep(0.2)
    assert owner.events == []                                 # offsets do not advance while offline
    state["state"] = "connected"
    gevent.sleep(0.2)
    assert [c["chunk"] for c in owner.events] == ["a line\n"]
    assert manager.stop("dep") == {"message": "stream stopped", "deployment_uid": "dep"}
    assert owner.events[-1]["final"] is True and owner.events[-1]["offsets"]["deploy"] == 7


def test_new_start_replaces_the_old_stream(tmp_path):
    owner = _Owner(tmp_path)
    manager = streams.DeployLogStreams(owner)
    manager.start("dep", "svc", {}, interval=0.05, idle_timeout=60)
    manager.start("dep", "svc", {}, interval=0.05, idle_timeout=60)
    finals = [e for e in owner.events if e.get("final")]
    assert len(finals) == 1
    manager.close()
