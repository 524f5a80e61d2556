"""Helpers of the hostile-repository tests: the agent, its repositories and its deploys."""
import os

import pytest

from agent.errors import AgentError
from tests.integration.harness.agentkit import InProcessAgent
from tests.integration.harness.deploykit import deploy_config as make_cfg  # noqa: F401 (for the tests)

MODULES = ("agent.handlers.lifecycle", "agent.handlers.deploy")
BASE = """\
services:
  web:
    image: pulseup-test/appbase:latest
    stop_grace_period: 1s
    command: ["sh", "-c", "while true; do sleep 1; done"]
"""


def start_agent(cfg):
    """The agent, with a private key where the real one lives (a target of the hostile files)."""
    os.makedirs(cfg.state_dir, exist_ok=True)
    os.makedirs(cfg.cert_dir, mode=0o700, exist_ok=True)
    with open(os.path.join(cfg.cert_dir, "agent.key"), "w") as handle:
        handle.write("-----BEGIN PRIVATE KEY-----\nnot a real key\n-----END PRIVATE KEY-----\n")
    agent = InProcessAgent(cfg, MODULES)
    try:
        agent.services.compose.command()
    except AgentError as exc:  # never a skip: the compose method is part of the agent
        agent.close()
        pytest.fail(f"docker compose or Debian's docker-compose is needed: {exc.message}")
    return agent


def push(git_server, uid, files, symlinks=None):
    """A repository holding ``files`` and ``symlinks`` ({path: target}); returns the sha."""
    git_server.add_repo(uid, files)
    src = os.path.join(git_server.dir, "src", f"{uid}.git")
    for path, target in (symlinks or {}).items():
        os.symlink(target, os.path.join(src, path))
    return git_server.commit(uid, {}, message="symlinks") if symlinks else None


def deploy(agent, git_server, uid, sha=None, env_vars=None, **service):
    data = {"service_uid": uid, "deployment_uid": f"{uid}-1", "github_repo": f"{git_server.base_url}/{uid}.git",
            "access_token": git_server.token, "github_branch": "main", "health_timeout_seconds": 30,
            "env_vars": env_vars or {"GREETING": "hi"},
            "service": {"deployment_method": "docker-compose", **service}}
    if sha:
        data["commit_sha"] = sha
    return agent.call("service.app.deploy", data)


def running(docker_client):
    return {c.id for c in docker_client.containers.list()}


def project_containers(docker_client, uid):
    return docker_client.containers.list(all=True, filters={"label": f"com.docker.compose.project=pulseup-{uid}"})
