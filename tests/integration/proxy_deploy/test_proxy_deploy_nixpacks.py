"""The Nixpacks method through service.app.install and service.app.deploy with the named
stand-in of tests/integration/proxy/standin (docs/support.md, "Build methods"): detected without a Dockerfile,
``update_nixpacks_config`` once on the first clone, the gated swap of the dockerfile method,
served through the domain; without nixpacks, failed_precondition naming what to install."""
import json
import os

import pytest
from harness.gitserver import APP_DOCKERFILE
from pdsupport import wait_for_body

from agent.services.nixpacks import NixpacksService

STANDIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "proxy", "standin")
SECRET = "nix-secret-value-4711"


def package_json(body):
    return json.dumps({"name": "app", "scripts": {
        "start": f"echo {body}-$GREETING > /www/index.html && exec httpd -f -p 8080 -h /www"}})


def deploy(agent, git_server, uid, dep, sha, **extra):
    data = {"service_uid": uid, "deployment_uid": dep, "github_repo": f"{git_server.base_url}/{uid}.git",
            "access_token": git_server.token, "github_branch": "main", "commit_sha": sha,
            "internal_port": 8080, "drain_seconds": 0, "health_timeout_seconds": 20,
            "env_vars": {"GREETING": "hi", "API_KEY": SECRET}}
    data.update(extra)
    return agent.call("service.app.deploy", data)


@pytest.fixture
def nixpacks_on_path(pd_agent):
    """The agent's nixpacks found in the stand-in directory (as if it were on PATH)."""
    previous = pd_agent.services.__dict__.get("nixpacks")
    pd_agent.services.nixpacks = NixpacksService(pd_agent.cfg, search_path=STANDIN_DIR)
    yield
    pd_agent.services.__dict__.pop("nixpacks", None)
    if previous is not None:
        pd_agent.services.nixpacks = previous


def test_nixpacks_install_deploy_and_serve(pd_agent, git_server, docker_client, track, nixpacks_on_path):
    uid, domain = "pd-nix", "pd-nix.example.test"
    track(uid)
    _, sha1 = git_server.add_repo(uid, {"package.json": package_json("nix-v1")})
    sha2 = git_server.commit(uid, {"package.json": package_json("nix-v2")}, message="v2")

    installed = pd_agent.call("service.app.install", {
        "service_uid": uid, "github_repo": f"{git_server.base_url}/{uid}.git", "access_token": git_server.token,
        "github_branch": "main", "commit_sha": sha1})
    assert installed["success"], installed
    assert installed["data"]["build_method"] == "nixpacks"
    configs = pd_agent.events_named("update_nixpacks_config")
    assert [c["service_uid"] for c in configs] == [uid]
    plan = configs[0]["config"]
    # the real tool's pinned format: no providers, the provider in NIXPACKS_METADATA
    assert plan["providers"] == [] and plan["variables"]["NIXPACKS_METADATA"] == "node"
    assert plan["variables"]["NIXPACKS_NODE_VERSION"] == "22"

    first = deploy(pd_agent, git_server, uid, "pd-nix-1", sha1, nixpacks_config={"variables": {"EXTRA": "1"}})
    assert first["success"], first
    assert first["data"]["deployment_method"] == "nixpacks"
    assert first["data"]["image"] == f"pulseup-app-{uid}:{sha1[:12]}"
    assert first["data"]["swap_mode"] == "blue_green"
    # the stand-in saw the build: variables in the private config file, never in argv
    calls = [json.loads(line) for line in open(os.path.join(pd_agent.cfg.apps_dir, uid, ".standin-nixpacks.log"))]
    build = calls[-1]
    assert build["argv"][0] == "build" and SECRET not in json.dumps(build["argv"])
    assert build["argv"][build["argv"].index("--name") + 1] == first["data"]["image"]
    variables = build["config"]["data"]["variables"]
    assert variables["API_KEY"] == SECRET and variables["PORT"] == "8080" and variables["EXTRA"] == "1"

    added = pd_agent.call("service.domain.manage", {"action": "add", "service_uid": uid, "domain": domain,
                                                    "port": 8080, "ssl": False})
    assert added["success"], added
    wait_for_body(pd_agent.cfg, domain, "nix-v1-hi")

    second = deploy(pd_agent, git_server, uid, "pd-nix-2", sha2)
    assert second["success"], second
    wait_for_body(pd_agent.cfg, domain, "nix-v2-hi", timeout=10)
    # first clone only: neither deploy sent the plan again
    assert len(pd_agent.events_named("update_nixpacks_config")) == 1
    history = pd_agent.services.deploy.history.load(uid)
    assert [(e["commit_sha"], e["deployment_method"]) for e in history] == [(sha2, "nixpacks"), (sha1, "nixpacks")]
    assert pd_agent.call("service.delete", {"service_uid": uid})["success"]


def test_without_nixpacks_deploy_names_what_to_install(pd_agent, git_server, track, tmp_path):
    uid = "pd-nonix"
    track(uid)
    pd_agent.services.nixpacks = NixpacksService(pd_agent.cfg, search_path=str(tmp_path))
    try:
        _, sha = git_server.add_repo(uid, {"package.json": package_json("x")})
        reply = deploy(pd_agent, git_server, uid, "pd-nonix-1", sha)
        assert reply["code"] == "failed_precondition", reply
        assert "no Dockerfile found" in reply["error"] and "install" in reply["error"]
        explicit = deploy(pd_agent, git_server, uid, "pd-nonix-2", sha, service={"deployment_method": "nixpacks"})
        assert explicit["code"] == "failed_precondition" and "nixpacks is not installed" in explicit["error"]
        # a Dockerfile is still built without nixpacks, and install reports that method
        sha2 = git_server.commit(uid, {"Dockerfile": APP_DOCKERFILE, "index.html": "docker\n"}, message="docker")
        installed = pd_agent.call("service.app.install", {
            "service_uid": uid, "github_repo": f"{git_server.base_url}/{uid}.git",
            "access_token": git_server.token, "github_branch": "main", "commit_sha": sha2})
        assert installed["success"] and installed["data"]["build_method"] == "dockerfile", installed
    finally:
        pd_agent.services.__dict__.pop("nixpacks", None)
