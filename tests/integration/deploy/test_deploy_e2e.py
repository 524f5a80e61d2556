"""End to end on the real services: deploy, replace, refuse a broken commit, roll back."""
import os

import gevent
import pytest
import requests

from agent.services.git import repository_dir
from harness.gitserver import APP_DOCKERFILE

HTTP = requests.Session()
HTTP.trust_env = False       # loopback and bridge addresses only: ignore proxy settings

BROKEN_DOCKERFILE = """\
FROM pulseup-test/appbase:latest
CMD ["sh", "-c", "echo broken build starting; exit 3"]
"""


def _answer(docker_client, container_name, port=8080):
    container = docker_client.containers.get(container_name)
    address = container.attrs["NetworkSettings"]["Networks"]["pulseup-net"]["IPAddress"]
    return HTTP.get(f"http://{address}:{port}/", timeout=5).text


def _deploy(agent, git_server, uid, dep, sha, **extra):
    data = {"service_uid": uid, "deployment_uid": dep, "github_repo": f"{git_server.base_url}/{uid}.git",
            "access_token": git_server.token, "github_branch": "main", "commit_sha": sha,
            "internal_port": 8080, "drain_seconds": 0, "health_timeout_seconds": 30, "env_vars": {}}
    data.update(extra)
    return agent.call("service.app.deploy", data)


class ArgvWatcher:
    """Scans every process's argv while deploys run, in a native thread of gevent's pool (a
    greenlet would not run while the hub waits on git and Docker); a token there is a leak."""

    def __init__(self, secret):
        self.secret = secret.encode()
        self.leaks = []
        self.scans = 0
        self.running = True
        self._result = None

    def start(self):
        self._result = gevent.get_hub().threadpool.spawn(self._run)

    def finish(self):
        self.running = False
        self._result.get(timeout=30)

    def _run(self):
        while self.running:
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as handle:
                        argv = handle.read()
                except OSError:
                    continue
                if self.secret in argv:
                    self.leaks.append(argv)
            self.scans += 1


def test_deploy_replace_refuse_and_roll_back(deploy_agent, git_server, docker_client, cleanup_service, caplog):
    uid = "e2e-app"
    cleanup_service(uid)
    _, sha1 = git_server.add_repo(uid, {"Dockerfile": APP_DOCKERFILE, "index.html": "version one\n"})
    sha2 = git_server.commit(uid, {"index.html": "version two\n"}, message="second")
    sha3 = git_server.commit(uid, {"Dockerfile": BROKEN_DOCKERFILE}, message="broken")
    watcher = ArgvWatcher(git_server.token)
    watcher.start()
    try:
        first = _deploy(deploy_agent, git_server, uid, "dep-1", sha1)
        assert first["success"], first
        assert first["data"]["commit_sha"] == sha1
        assert first["data"]["container_name"] == f"pulseup-app-{uid}-v0001"
        assert first["data"]["swap_mode"] == "blue_green"
        assert _answer(docker_client, first["data"]["container_name"]) == "version one\n"

        second = _deploy(deploy_agent, git_server, uid, "dep-2", sha2)
        assert second["success"], second
        assert _answer(docker_client, f"pulseup-app-{uid}-v0002") == "version two\n"
        with pytest.raises(Exception):
            docker_client.containers.get(f"pulseup-app-{uid}-v0001")

        third = _deploy(deploy_agent, git_server, uid, "dep-3", sha3)
        assert not third["success"]
        assert third["code"] == "health_check_failed", third
        names = [c.name for c in docker_client.containers.list(
            all=True, filters={"label": f"pulseup.service_uid={uid}"})]
        assert names == [f"pulseup-app-{uid}-v0002"]
        assert _answer(docker_client, f"pulseup-app-{uid}-v0002") == "version two\n"

        back = deploy_agent.call("service.deploy.rollback", {"service_uid": uid, "commit_sha": sha1[:8],
                                                             "drain_seconds": 0})
        assert back["success"], back
        assert back["data"]["rolled_back_to"] == f"pulseup-app-{uid}:{sha1[:12]}"
        assert back["data"]["previous_version"] == f"pulseup-app-{uid}:{sha2[:12]}"
        assert _answer(docker_client, back["data"]["container_name"]) == "version one\n"
        # v0003 was the refused candidate, removed: the next free version number
        assert back["data"]["container_name"] == f"pulseup-app-{uid}-v0003"
    finally:
        watcher.finish()

    statuses = [(e["deployment_uid"], e["status"]) for e in deploy_agent.events_named("update_deployment_status")
                if e["status"] != "in_progress"]
    assert statuses == [("dep-1", "completed"), ("dep-2", "completed"), ("dep-3", "failed")]
    phases = [e["phase"] for e in deploy_agent.events_named("update_deployment_status")
              if e["deployment_uid"] == "dep-1" and e["status"] == "in_progress"]
    assert [p for i, p in enumerate(phases) if p not in phases[:i]] == [
        "fetch_source", "build", "deploy", "health_check", "switch_traffic", "cleanup"]
    rollback = [e["status"] for e in deploy_agent.events_named("rollback_status_update")]
    assert rollback == ["rolling_back", "running"]
    assert deploy_agent.events_named("update_docker_config")[0]["dockerfile_paths"] == ["Dockerfile"]

    # the token is in no child's argv, no git config, no log record, no deployment file
    assert watcher.scans > 0 and watcher.leaks == []
    clone = os.path.join(deploy_agent.cfg.apps_dir, uid)
    git_dir = repository_dir(deploy_agent.cfg, uid)
    assert not os.path.exists(os.path.join(clone, ".git"))   # the git dir is private (docs/security.md)
    with open(os.path.join(git_dir, "config")) as handle:
        assert git_server.token not in handle.read()
    assert all(git_server.token not in record.getMessage() for record in caplog.records)
    for name in os.listdir(deploy_agent.cfg.deployment_log_dir):
        with open(os.path.join(deploy_agent.cfg.deployment_log_dir, name)) as handle:
            assert git_server.token not in handle.read(), name
    assert all(git_server.token not in repr(event) for event in deploy_agent.events)

    history = deploy_agent.services.deploy.history.load(uid)
    assert [entry["commit_sha"] for entry in history] == [sha2, sha1]

    deleted = deploy_agent.call("service.delete", {"service_uid": uid, "purge_files": True})
    assert deleted["success"], deleted
    assert deleted["data"]["containers_deleted"] == [back["data"]["container_name"]]
    # the refused build's image stays until a later successful deploy prunes it (2.5.2 item 8)
    assert sorted(deleted["data"]["images_removed"]) == sorted(
        [f"pulseup-app-{uid}:{sha[:12]}" for sha in (sha1, sha2, sha3)] + [f"pulseup-app:{uid}"])
    assert not os.path.exists(clone) and not os.path.exists(git_dir)
    assert docker_client.containers.list(all=True, filters={"label": f"pulseup.service_uid={uid}"}) == []
