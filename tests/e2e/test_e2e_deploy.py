"""service.app.*, service.deploy.*, service.logs.* and service.container.stats.live through the
wire (docs/commands.md, "Deployments" and "Logs and stats"), on one app deployed once per
module, and the service log stream re-attaching across a blue-green swap (issue 18 item 7)."""

import re

import gevent
import pytest

from tests.e2e.apps import app_files, deploy_request, service_containers, unique
from tests.e2e.wire import RFC3339

covers = pytest.mark.covers
SHA = re.compile(r"^[0-9a-f]{40}$")
PHASES = {"queued", "fetch_source", "build", "deploy", "health_check", "switch_traffic", "cleanup"}


class App:
    def __init__(self, uid, shas, first, mark, container):
        self.uid, self.shas, self.first, self.mark = uid, shas, first, mark
        self.container = container      # the first one, as it was (later tests replace it)
        self.deploys = 1


@pytest.fixture(scope="module")
def app(wire, git_server, docker_client):
    uid = unique("e2e-app")
    git_server.add_repo(uid, app_files("v1"))
    shas = {"v1": git_server.commit(uid, {}, message="first release")}
    shas["v2"] = git_server.commit(uid, app_files("v2"), message="second release")
    mark = wire.mark()
    first = wire.call("service.app.deploy", deploy_request(git_server, uid, f"{uid}-d1", shas["v1"]), timeout=300)
    assert first["success"] is True, first
    yield App(uid, shas, first, mark, docker_client.containers.get(first["data"]["container_name"]))
    wire.call("service.delete", {"service_uid": uid, "purge_files": True}, timeout=120)


def statuses(wire, deployment_uid, since=0):
    return wire.events("update_deployment_status", since, lambda e: e["deployment_uid"] == deployment_uid)


@covers("service.app.deploy", outcome="success")
def test_deploy_reply_events_and_container(app, wire, docker_client):
    data, uid = app.first["data"], app.uid
    assert app.first["error"] == "" and app.first["code"] == ""
    assert data["success"] is True and data["deployment_method"] == "dockerfile"
    assert data["swap_mode"] == "blue_green" and data["deployment_version"] == 1
    assert data["container_name"] == f"pulseup-app-{uid}-v0001"
    assert data["image"] == f"pulseup-app-{uid}:{app.shas['v1'][:12]}"
    assert data["commit_sha"] == app.shas["v1"] and data["commit_message"].startswith("first release")
    assert isinstance(data["duration_seconds"], float) and data["duration_seconds"] > 0
    container = app.container
    assert container.id == data["container"] and container.status == "running"
    assert container.labels["pulseup.managed"] == "true" and container.labels["pulseup.deployment_uid"] == f"{uid}-d1"
    assert "GREETING=hello" in container.attrs["Config"]["Env"]
    assert "pulseup-net" in container.attrs["NetworkSettings"]["Networks"]
    wire.wait_event("update_deployment_status", lambda e: e["deployment_uid"] == f"{uid}-d1"
                    and e["status"] != "in_progress", app.mark, timeout=30)
    events = statuses(wire, f"{uid}-d1", app.mark)
    assert events[-1]["status"] == "completed"
    assert [e["status"] for e in events[:-1]] == ["in_progress"] * (len(events) - 1)
    assert {e["phase"] for e in events[:-1]} <= PHASES and "build" in {e["phase"] for e in events[:-1]}
    last = events[-1]
    assert last["service_uid"] == uid and last["commit_sha"] == app.shas["v1"] and isinstance(last["timestamp"], int)
    assert last["image"] == data["image"] and last["container_name"] == data["container_name"]
    assert last["deployment_version"] == 1 and "error" not in last
    config = wire.events("update_docker_config", app.mark, lambda e: e["service_uid"] == uid)
    assert config and config[0]["dockerfile_paths"] == ["Dockerfile"]


@covers("service.app.deploy", outcome="refusal")
def test_deploy_refusals(app, wire, git_server):
    uid = app.uid
    wire.refused("service.app.deploy", deploy_request(git_server, "../x", "d-x", app.shas["v1"]), "invalid_argument",
                 field="service_uid")
    wire.refused("service.app.deploy", deploy_request(git_server, uid, "d-port", app.shas["v1"], internal_port="8080"),
                 "invalid_argument", field="internal_port")
    foreign = deploy_request(git_server, uid, "d-host", app.shas["v1"], github_repo="https://evil.example.com/a/b.git")
    wire.refused("service.app.deploy", foreign, "invalid_argument", field="github_repo")
    mark = wire.mark()
    missing = deploy_request(git_server, uid, f"{uid}-missing", "ab" * 20)
    reply = wire.refused("service.app.deploy", missing, "not_found", timeout=120)
    assert reply["data"].get("operation_id") == f"deploy:{uid}-missing"
    failed = wire.wait_events("update_deployment_status", lambda e: e["deployment_uid"] == f"{uid}-missing"
                              and e["status"] != "in_progress", mark, timeout=30)
    assert len(failed) == 1 and failed[-1]["status"] == "failed"
    assert failed[-1]["code"] == "not_found" and failed[-1]["error"]
    # the running version is untouched
    assert wire.ok("service.status.get", {"service_uid": uid})["status"] == "running"


@covers("service.app.install", outcome="success")
def test_install_fetches_and_plans_without_building(app, wire, git_server, docker_client):
    uid = unique("e2e-inst")
    git_server.add_repo(uid, app_files("inst"))
    mark = wire.mark()
    data = wire.ok("service.app.install", {"service_uid": uid, "github_repo": f"{git_server.base_url}/{uid}.git",
                                           "access_token": git_server.token, "github_branch": "main"}, timeout=120)
    assert set(data) == {"success", "clone_path", "commit_sha", "build_method"}
    assert data["success"] is True and data["build_method"] == "dockerfile" and SHA.match(data["commit_sha"])
    assert data["clone_path"].endswith(f"/apps/{uid}")
    assert wire.wait_event("update_docker_config", lambda e: e["service_uid"] == uid, mark)["dockerfile_paths"] == [
        "Dockerfile"]
    assert service_containers(docker_client, uid) == [] and not docker_client.images.list(name=f"pulseup-app-{uid}")
    wire.ok("service.delete", {"service_uid": uid, "purge_files": True}, timeout=60)


@covers("service.app.install", outcome="refusal")
def test_install_refusals(wire, git_server):
    uid = unique("e2e-inst")
    wire.refused("service.app.install", {"service_uid": uid, "github_repo": "https://evil.example.com/a/b.git"},
                 "invalid_argument", field="github_repo")
    mark = wire.mark()
    wire.refused("service.app.install", {"service_uid": uid, "github_repo": f"{git_server.base_url}/nothing.git",
                                         "access_token": git_server.token}, "not_found", timeout=120)
    failed = wire.wait_event("update_service_status", lambda e: e["service_uid"] == uid, mark)
    assert failed["status"] == "failed" and failed["error"] and re.match(RFC3339, failed["timestamp"])


@covers("service.status.get", outcome="success")
def test_status_of_the_running_app(app, wire):
    data = wire.ok("service.status.get", {"service_uid": app.uid})
    assert data["service_uid"] == app.uid and data["status"] == "running" and data["health"] in ("none", "healthy")
    active = data["deployment"]
    assert active["status"] == "running" and active["port"] == 8080 and active["error"] == ""
    assert active["name"].startswith(f"pulseup-app-{app.uid}-v") and re.match(RFC3339, active["updated_at"])
    (container,) = [c for c in data["containers"] if c["name"] == active["name"]]
    assert set(container) >= {"name", "id", "status", "health", "image"} and container["status"] == "running"
    empty = wire.ok("service.status.get", {"service_uid": unique("e2e-none")})
    assert empty["status"] == "stopped" and empty["containers"] == []


@covers("service.status.get", "service.logs.fetch", "service.container.stats.live", outcome="refusal")
def test_read_only_refusals(app, wire, docker_client, base_image):
    wire.refused("service.status.get", {"service_uid": "-bad"}, "invalid_argument", field="service_uid")
    wire.refused("service.logs.fetch", {"service_uid": unique("e2e-none")}, "not_found")
    wire.refused("service.logs.fetch", {"service_uid": app.uid, "lines": 10001}, "invalid_argument", field="lines")
    wire.refused("service.container.stats.live", {}, "invalid_argument")
    stranger = docker_client.containers.run(base_image, ["sleep", "300"], name=unique("e2e-stranger"), detach=True)
    try:
        wire.refused("service.container.stats.live", {"container_id": stranger.name}, "permission_denied")
    finally:
        stranger.remove(force=True)


@covers("service.logs.fetch", outcome="success")
def test_service_logs_fetch(app, wire):
    for _ in range(100):      # a container swapped in by an earlier test may not have 5 lines yet
        data = wire.ok("service.logs.fetch", {"service_uid": app.uid, "lines": 5})
        if len(data["logs"]) == 5:
            break
        gevent.sleep(0.1)
    assert set(data) == {"logs", "container", "truncated"} and data["truncated"] is False   # truncated: frame limit
    assert len(data["logs"]) == 5 and data["container"].startswith(f"pulseup-app-{app.uid}-v")
    assert all(re.match(r"^v[12] \d+$", line) for line in data["logs"]), data["logs"]
    numbers = [int(line.split()[1]) for line in data["logs"]]
    assert numbers == list(range(numbers[0], numbers[0] + 5))       # the last 5, in order


@covers("service.container.stats.live", outcome="success")
def test_container_stats_live(app, wire, docker_client):
    data = wire.ok("service.container.stats.live", {"service_uid": app.uid})
    container = docker_client.containers.get(data["container_name"])
    assert data["container_id"] == container.id and re.match(r"^[0-9a-f]{64}$", data["container_id"])
    assert data["status"] == "running" and data["pulseup_managed"] is True
    assert set(data["cpu"]) >= {"usage", "throttled", "limit"} and data["cpu"]["limit"] > 0
    assert set(data["memory"]) >= {"usage", "limit", "percent", "cache", "rss"} and data["memory"]["usage"] > 0
    assert set(data["network"]) >= {"rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_errors", "tx_errors"}
    assert set(data["disk"]) >= {"read_bytes", "write_bytes", "read_ops", "write_ops"}
    assert isinstance(data["uptime"], int) and data["uptime_seconds"] > 0 and re.match(RFC3339, data["timestamp"])
    by_id = wire.ok("service.container.stats.live", {"container_id": container.id[:12], "service_uid": app.uid})
    assert by_id["container_name"] == data["container_name"]


@covers("service.deploy.logs.fetch", outcome="success")
def test_deployment_logs_fetch(app, wire):
    dep = f"{app.uid}-d1"
    data = wire.ok("service.deploy.logs.fetch", {"service_uid": app.uid, "deployment_uid": dep, "log_type": "all",
                                                 "lines": -1})
    assert set(data) >= {"service_uid", "deployment_uid", "logs", "deployment_logs", "container_logs", "log_type",
                         "lines_returned", "steps", "truncated"}
    assert data["logs"] == data["deployment_logs"] and data["log_type"] == "all" and data["truncated"] is False
    lines = data["logs"].splitlines()
    assert data["lines_returned"] == len(lines) > 0
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\S+Z - (INFO|WARN|ERROR) - ", line) for line in lines), lines[:5]
    assert app.shas["v1"] in data["logs"] and "hello" not in data["logs"]      # env values never logged
    assert [s["id"] for s in data["steps"]][:2] == ["initialize", "fetch_source"]
    assert all(s["status"] == "success" for s in data["steps"]), data["steps"]
    whole = wire.ok("service.deploy.logs.fetch", {"service_uid": app.uid, "deployment_uid": dep, "lines": -1})
    build = wire.ok("service.deploy.logs.fetch", {"service_uid": app.uid, "deployment_uid": dep, "lines": 2})
    assert build["log_type"] == "build" and build["lines_returned"] == 2
    assert build["logs"].splitlines() == whole["logs"].splitlines()[-2:] and build["truncated"] is False


@covers("service.deploy.logs.fetch", "service.deploy.logs.stream.start", "service.deploy.logs.stream.stop",
        outcome="refusal")
def test_deployment_log_refusals(app, wire):
    wire.refused("service.deploy.logs.fetch", {"service_uid": app.uid, "deployment_uid": "never-ran"}, "not_found")
    wire.refused("service.deploy.logs.fetch", {"service_uid": app.uid, "deployment_uid": f"{app.uid}-d1",
                                               "log_type": "everything"}, "invalid_argument", field="log_type")
    wire.refused("service.deploy.logs.stream.start", {"deployment_uid": f"{app.uid}-d1", "flush_interval_ms": 50},
                 "invalid_argument", field="flush_interval_ms")
    wire.refused("service.deploy.logs.stream.stop", {"deployment_uid": "never-ran"}, "not_found",
                 contains="no active stream for deployment")


@covers("service.deploy.logs.stream.start", "service.deploy.logs.stream.stop", outcome="success")
def test_deployment_log_stream_start_and_stop(app, wire):
    dep = f"{app.uid}-d1"
    full = wire.ok("service.deploy.logs.fetch", {"service_uid": app.uid, "deployment_uid": dep, "lines": -1,
                                                 "log_type": "build"})["logs"]
    mark = wire.mark()
    started = wire.ok("service.deploy.logs.stream.start", {"deployment_uid": dep, "include_steps": True,
                                                           "flush_interval_ms": 200, "idle_timeout_seconds": 600})
    assert started == {"message": "Deployment log streaming started", "deployment_uid": dep,
                       "offsets": {"build": 0, "deploy": 0}}
    first = wire.wait_event("deployment_log_chunk", lambda e: e["deployment_uid"] == dep, mark)
    assert first["sequence"] == 1 and first["service_uid"] == app.uid
    stopped = wire.ok("service.deploy.logs.stream.stop", {"deployment_uid": dep})
    assert stopped == {"message": "stream stopped", "deployment_uid": dep}
    chunks = wire.wait_events("deployment_log_chunk", lambda e: e["deployment_uid"] == dep and e.get("final"),
                              mark)
    chunks = wire.events("deployment_log_chunk", mark, lambda e: e["deployment_uid"] == dep)
    assert [c["sequence"] for c in chunks] == list(range(1, len(chunks) + 1))
    assert chunks[-1]["final"] is True and sum(1 for c in chunks if c.get("final")) == 1
    build = "".join(c.get("chunk", "") for c in chunks if c.get("log_type") == "build")
    assert build == full + "\n" or build == full, (len(build), len(full))
    assert any(c.get("steps") for c in chunks)
    for chunk in chunks:
        if "chunk" in chunk:
            assert chunk["size"] == len(chunk["chunk"].encode())
            assert chunk["end_offset"] - chunk["start_offset"] == chunk["size"]
    wire.refused("service.deploy.logs.stream.stop", {"deployment_uid": dep}, "not_found")


def _log_lines(events):
    """(container_name, line) of every stdout line in ``container_log`` events, in order."""
    lines = []
    for event in events:
        if event["type"] == "log":
            lines += [(event["container_name"], line) for line in event["message"].split("\n")]
        else:
            lines.append((event["container_name"], "#info " + event["message"]))
    return lines


def _numbers(lines, tag):
    return [int(line.split()[1]) for _, line in lines if line.startswith(tag + " ")]


@covers("service.logs.stream.start", "service.logs.stream.stop", outcome="success")
def test_log_stream_re_attaches_across_a_blue_green_swap(app, wire, git_server):
    """Lines of the old and the new container arrive in order around the "switched" marker,
    none twice and none missing (issue 18 item 7)."""
    uid = app.uid
    before = wire.ok("service.status.get", {"service_uid": uid})["deployment"]["name"]
    old_tag = wire.ok("service.logs.fetch", {"service_uid": uid, "lines": 1})["logs"][0].split()[0]
    new_tag = "v2" if old_tag == "v1" else "v1"
    mark = wire.mark()
    started = wire.ok("service.logs.stream.start", {"service_uid": uid, "tail": 5})
    assert started["service_uid"] == uid and started["container"] == before
    assert started["message"] == "Log streaming started" and re.match(RFC3339, started["start_time"])
    app.deploys += 1
    dep = f"{uid}-d{app.deploys}"
    reply = wire.call("service.app.deploy", deploy_request(git_server, uid, dep, app.shas[new_tag]), timeout=300)
    assert reply["success"] is True, reply
    after = reply["data"]["container_name"]
    assert reply["data"]["swap_mode"] == "blue_green" and after != before
    marker = f"Log stream switched to {after}"
    wire.wait_event("container_log", lambda e: e["service_uid"] == uid and e["message"] == marker, mark, timeout=60)
    wire.wait_event("container_log", lambda e: e["service_uid"] == uid and e["type"] == "log"
                    and e["message"].startswith(new_tag + " ") and "\n" in e["message"], mark, timeout=30)
    stopped = wire.ok("service.logs.stream.stop", {"service_uid": uid})
    assert stopped == {"message": "Log streaming stopped", "service_uid": uid}
    wire.wait_event("container_log", lambda e: e["service_uid"] == uid and e["message"] == "Log streaming stopped",
                    mark, timeout=30)
    gevent.sleep(0.5)           # nothing may follow the stop
    lines = _log_lines(wire.events("container_log", mark, lambda e: e["service_uid"] == uid))
    assert lines[0] == (before, f"#info Log streaming started for {before}")
    assert lines[-1][1] == "#info Log streaming stopped"
    switch = lines.index((after, "#info " + marker))
    old, new = _numbers(lines[:switch], old_tag), _numbers(lines[switch:], new_tag)
    assert _numbers(lines[switch:], old_tag) == [] and _numbers(lines[:switch], new_tag) == []
    assert old == list(range(old[0], old[0] + len(old))), old            # no gap, no duplicate
    assert len(old) > 10 and new[0] == 1, (old[:3], new[:3])            # the new one from its first line
    assert new == list(range(1, len(new) + 1)), new
    assert all(name == before for name, _ in lines[1:switch]) and all(name == after for name, _ in lines[switch:-1])


@covers("service.logs.stream.start", "service.logs.stream.stop", outcome="refusal")
def test_log_stream_refusals(app, wire):
    wire.refused("service.logs.stream.start", {"service_uid": unique("e2e-none")}, "not_found")
    wire.refused("service.logs.stream.start", {"service_uid": app.uid, "tail": 1001}, "invalid_argument", field="tail")
    wire.refused("service.logs.stream.stop", {"service_uid": unique("e2e-none")}, "not_found")


@covers("service.deploy.rollback", outcome="success")
def test_rollback_to_the_first_deployment(app, wire):
    uid = app.uid
    previous = wire.ok("service.status.get", {"service_uid": uid})["deployment"]["name"]
    mark = wire.mark()
    data = wire.ok("service.deploy.rollback", {"service_uid": uid, "deployment_uid": f"{uid}-d1"}, timeout=300)
    assert data["service_uid"] == uid and data["status"] == "running" and data["port"] == 8080
    assert data["rolled_back_to"] == f"pulseup-app-{uid}:{app.shas['v1'][:12]}" and data["commit_sha"] == app.shas["v1"]
    assert data["container_name"] != previous and data["container_name"].startswith(f"pulseup-app-{uid}-v")
    assert re.match(r"^[0-9a-f]{64}$", data["container_id"]) and data["duration_seconds"] > 0
    assert data["previous_version"].startswith(f"pulseup-app-{uid}:") and data["commit_message"].startswith("first")
    events = wire.wait_events("rollback_status_update", lambda e: e["service_uid"] == uid, mark, count=2, timeout=30)
    assert [e["status"] for e in events] == ["rolling_back", "running"], events
    assert events[-1]["rolled_back_to"] == data["rolled_back_to"] and isinstance(events[-1]["timestamp"], int)
    assert wire.ok("service.logs.fetch", {"service_uid": uid, "lines": 1})["logs"][0].startswith("v1 ")


@covers("service.deploy.rollback", outcome="refusal")
def test_rollback_refusals(app, wire):
    wire.refused("service.deploy.rollback", {"service_uid": app.uid, "deployment_uid": "never-deployed"}, "not_found")
    wire.refused("service.deploy.rollback", {"service_uid": app.uid, "commit_sha": "xyz"}, "invalid_argument",
                 field="commit_sha")
