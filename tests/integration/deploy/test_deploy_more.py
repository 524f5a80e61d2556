"""Single-slot swaps, hostile inputs, install, deployment logs and cancellation on the real services."""
import json
import os
import socket
import time

import gevent
import requests

from agent.errors import AgentError
from harness import free_port
from harness.gitserver import APP_DOCKERFILE

HTTP = requests.Session()
HTTP.trust_env = False

SLEEPER_DOCKERFILE = """\
FROM pulseup-test/appbase:latest
CMD ["sleep", "300"]
"""
BROKEN_DOCKERFILE = """\
FROM pulseup-test/appbase:latest
CMD ["sh", "-c", "exit 4"]
"""


def _get(url, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return HTTP.get(url, timeout=5).text
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _request(git_server, uid, dep, sha, **extra):
    data = {"service_uid": uid, "deployment_uid": dep, "github_repo": f"{git_server.base_url}/{uid}.git",
            "access_token": git_server.token, "commit_sha": sha, "drain_seconds": 0,
            "health_timeout_seconds": 30}
    data.update(extra)
    return data


def test_hostile_inputs_are_refused(deploy_agent, git_server):
    base = {"service_uid": "ok", "deployment_uid": "d1", "github_repo": git_server.repo_url}
    cases = [({"service_uid": "../x"}, "service_uid"), ({"github_branch": "--upload-pack=x"}, "github_branch"),
             ({"github_repo": "https://evil.example/app.git"}, "github_repo"),
             ({"github_repo": f"http://127.0.0.2:{git_server.port}/app.git"}, "github_repo")]
    for change, field in cases:
        for command in ("service.app.deploy", "service.app.install"):
            reply = deploy_agent.call(command, {**base, **change})
            assert (reply["success"], reply["code"], reply["data"]["field"]) == (False, "invalid_argument", field)
    assert not os.path.exists(deploy_agent.cfg.apps_dir)


def test_install_then_git_failures(deploy_agent, git_server):
    uid = "install-app"
    _, sha1 = git_server.add_repo(uid, {"Dockerfile": APP_DOCKERFILE, "index.html": "one\n"})
    git_server.commit(uid, {"index.html": "two\n"})
    data = {"service_uid": uid, "github_repo": f"{git_server.base_url}/{uid}.git", "access_token": git_server.token}
    reply = deploy_agent.call("service.app.install", {**data, "commit_sha": sha1[:10]})
    assert reply["success"], reply
    assert reply["data"]["commit_sha"] == sha1 and reply["data"]["build_method"] == "dockerfile"
    clone = reply["data"]["clone_path"]
    with open(os.path.join(clone, "index.html")) as handle:
        assert handle.read() == "one\n"
    with open(os.path.join(deploy_agent.cfg.deployment_dir, uid, "build_plan.json")) as handle:
        assert json.load(handle)["dockerfile_path"] == "Dockerfile"

    failures = [({"access_token": "wrong-token"}, "permission_denied"), ({"access_token": ""}, "permission_denied"),
                ({"github_branch": "no-such-branch"}, "not_found"), ({"commit_sha": "0" * 40}, "not_found")]
    for change, code in failures:
        reply = deploy_agent.call("service.app.install", {**data, **change})
        assert (reply["success"], reply["code"]) == (False, code), (change, reply)
    statuses = deploy_agent.events_named("update_service_status")
    assert [s["status"] for s in statuses] == ["failed"] * len(failures)

    # a foreign directory in the work tree's place is replaced by a fresh clone
    os.rename(clone, clone + ".keep")
    os.makedirs(os.path.join(clone, "junk"))
    reply = deploy_agent.call("service.app.install", data)
    assert reply["success"], reply
    assert not os.path.exists(os.path.join(clone, "junk"))
    with open(os.path.join(clone, "index.html")) as handle:
        assert handle.read() == "two\n"


def test_single_slot_swap_restores_the_previous_version(deploy_agent, git_server, docker_client,
                                                        cleanup_service):
    uid = "slot-app"
    cleanup_service(uid)
    port = free_port()
    _, sha1 = git_server.add_repo(uid, {"Dockerfile": APP_DOCKERFILE, "index.html": "slot one\n"})
    sha2 = git_server.commit(uid, {"Dockerfile": BROKEN_DOCKERFILE})
    deploy_agent.env_vars = {"GREETING": "hello", "RETRIES": 3}
    mapping = [{"external": port, "internal": 8080}]
    with socket.socket() as holder:          # a port held on the host is a conflict (docs/commands.md, "Deployments")
        holder.bind(("127.0.0.1", port))
        holder.listen()
        busy = deploy_agent.call("service.app.deploy", _request(git_server, uid, "slot-0", sha1,
                                                                port_mappings=mapping))
    assert (busy["success"], busy["code"]) == (False, "conflict") and f"port {port}" in busy["error"]
    first = deploy_agent.call("service.app.deploy", _request(git_server, uid, "slot-1", sha1, port_mappings=mapping))
    assert first["success"], first
    assert first["data"]["swap_mode"] == "single_slot"
    assert _get(f"http://127.0.0.1:{port}/") == "slot one\n"
    env = docker_client.containers.get(first["data"]["container"]).attrs["Config"]["Env"]
    assert {"GREETING=hello", "RETRIES=3", "PORT=8080", f"PULSEUP_PRIMARY_EXTERNAL_PORT={port}"} <= set(env)
    assert not any(item.startswith("PULSEUP_PORT_MAPPINGS=") for item in env)
    assert ("get_service_env_vars", {"service_uid": uid}) in deploy_agent.server_calls

    second = deploy_agent.call("service.app.deploy", _request(git_server, uid, "slot-2", sha2, port_mappings=mapping))
    assert (second["success"], second["code"]) == (False, "health_check_failed")
    assert "previous version restored" in second["error"]
    assert _get(f"http://127.0.0.1:{port}/") == "slot one\n"
    running = docker_client.containers.list(filters={"label": f"pulseup.service_uid={uid}"})
    assert [c.name for c in running] == [f"pulseup-app-{uid}-v0001"]

    # the next success replaces v0001 and prunes the refused build's image
    sha3 = git_server.commit(uid, {"Dockerfile": APP_DOCKERFILE, "index.html": "slot three\n"})
    third = deploy_agent.call("service.app.deploy", _request(git_server, uid, "slot-3", sha3, port_mappings=mapping))
    assert third["success"], third
    assert _get(f"http://127.0.0.1:{port}/") == "slot three\n"
    tags = sorted(t for image in docker_client.images.list(name=f"pulseup-app-{uid}") for t in image.tags
                  if t.startswith(f"pulseup-app-{uid}:"))
    assert tags == sorted(f"pulseup-app-{uid}:{sha[:12]}" for sha in (sha1, sha3))


def test_deployment_logs_fetch_and_stream(deploy_agent, git_server, cleanup_service):
    uid = "logs-app"
    cleanup_service(uid)
    _, sha1 = git_server.add_repo(uid, {"Dockerfile": APP_DOCKERFILE, "index.html": "logs\n"})
    reply = deploy_agent.call("service.app.deploy", _request(git_server, uid, "logs-1", sha1, internal_port=8080))
    assert reply["success"], reply
    fetched = deploy_agent.call("service.deploy.logs.fetch", {"service_uid": uid, "deployment_uid": "logs-1",
                                                              "log_type": "all", "lines": -1})["data"]
    # the build's own lines: BuildKit's plain progress, or the classic builder's steps
    assert "builder: " in fetched["logs"] and "completed" in fetched["logs"]
    assert "load build definition from Dockerfile" in fetched["logs"] or "Step 1/" in fetched["logs"]
    assert [s["id"] for s in fetched["steps"]] == ["initialize", "fetch_source", "build_image", "deploy_container",
                                                   "health_check", "switch_traffic", "cleanup"]
    assert all(s["status"] == "success" for s in fetched["steps"])
    switch = [s for s in fetched["steps"] if s["id"] == "switch_traffic"][0]
    assert switch["logs"][-1]["message"] in ("the service has no domains: nothing to switch",
                                             "no proxy is configured on this agent: traffic not switched")
    assert switch["metadata"]["active_container"] == f"pulseup-app-{uid}-v0001"

    size = os.path.getsize(os.path.join(deploy_agent.cfg.deployment_log_dir, "logs-1_build.log"))
    started = deploy_agent.call("service.deploy.logs.stream.start", {
        "deployment_uid": "logs-1", "offsets": {"build": size - 10}, "flush_interval_ms": 200})
    assert started["success"] and started["data"]["offsets"]["build"] == size - 10
    with gevent.Timeout(20):
        while not any(c.get("final") for c in deploy_agent.events_named("deployment_log_chunk")):
            gevent.sleep(0.1)
    chunks = deploy_agent.events_named("deployment_log_chunk")
    build = [c for c in chunks if c.get("log_type") == "build"]
    assert build[0]["start_offset"] == size - 10 and build[-1]["end_offset"] == size
    assert chunks[0]["service_uid"] == uid        # recorded for the deployment by this agent
    missing = deploy_agent.call("service.deploy.logs.fetch", {"service_uid": uid, "deployment_uid": "nope"})
    assert missing["code"] == "not_found"


def test_cancel_during_the_gate_removes_the_candidate(deploy_agent, git_server, docker_client, cleanup_service):
    uid = "cancel-app"
    cleanup_service(uid)
    _, sha1 = git_server.add_repo(uid, {"Dockerfile": SLEEPER_DOCKERFILE})
    data = _request(git_server, uid, "cancel-1", sha1, internal_port=8080, health_timeout_seconds=120)
    result = gevent.spawn(deploy_agent.call, "service.app.deploy", data)
    with gevent.Timeout(60):
        while not any(c.name.endswith("-candidate") for c in docker_client.containers.list(
                filters={"label": f"pulseup.service_uid={uid}"})):
            gevent.sleep(0.1)
    job = deploy_agent.dispatcher.operations.find(deployment_uid="cancel-1")
    assert deploy_agent.dispatcher.cancel(job=job) == "cancelling"
    reply = result.get(timeout=60)
    assert (reply["success"], reply["code"]) == (False, "cancelled")
    assert docker_client.containers.list(all=True, filters={"label": f"pulseup.service_uid={uid}"}) == []
    terminal = [e["status"] for e in deploy_agent.events_named("update_deployment_status")
                if e["status"] != "in_progress"]
    assert terminal == ["cancelled"]


def test_interrupted_between_create_and_its_return_leaves_no_candidate(deploy_agent, git_server, docker_client,
                                                                        cleanup_service, monkeypatch):
    """The engine created the candidate, the SDK had not returned it yet (its inspect call)
    when the deploy was interrupted: the candidate is still found and removed."""
    uid = "interrupted-create"
    cleanup_service(uid)
    _, sha1 = git_server.add_repo(uid, {"Dockerfile": SLEEPER_DOCKERFILE})
    from docker.models.containers import ContainerCollection   # a new collection per access
    real_create = ContainerCollection.create

    def create_then_interrupt(self, image, **kwargs):
        real_create(self, image, **kwargs)
        raise AgentError("cancelled", "interrupted right after the engine created the container")
    monkeypatch.setattr(ContainerCollection, "create", create_then_interrupt)
    reply = deploy_agent.call("service.app.deploy", _request(git_server, uid, "interrupt-1", sha1, internal_port=8080))
    assert (reply["success"], reply["code"]) == (False, "cancelled")
    assert docker_client.containers.list(all=True, filters={"label": f"pulseup.service_uid={uid}"}) == []
