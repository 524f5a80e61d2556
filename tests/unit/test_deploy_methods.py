"""Choosing the build method (docs/commands.md, "Deployments", pipeline), the compose request keys, the stored
plan, update_nixpacks_config on the first clone, and compose down on service.delete."""
import json
import os
from types import SimpleNamespace

import pytest

from agent import config
from agent.errors import AgentError
from agent.handlers import deploy as handlers
from agent.services.context import CallContext
from agent.protocol.fields import load_request
from agent.services.deploy import DeployService, methods
from agent.services.nixpacks import NixpacksService

STANDIN_DIR = os.path.join(os.path.dirname(__file__), "..", "integration", "proxy", "standin")


def _services(tmp_path, nixpacks_dir=None):
    cfg = config.defaults().replace(deployment_dir=str(tmp_path / "deployments"),
                                    deployment_log_dir=str(tmp_path / "logs"))
    search = nixpacks_dir or str(tmp_path / "empty")
    os.makedirs(search, exist_ok=True)
    return SimpleNamespace(cfg=cfg, docker=None, nixpacks=NixpacksService(cfg, search_path=search))


def _clone(tmp_path, files):
    root = tmp_path / "clone"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    root.mkdir(exist_ok=True)
    return str(root)


def _request(**service):
    return load_request(handlers.DeployRequest(), {"service_uid": "svc", "deployment_uid": "dep", "service": service})


def test_a_dockerfile_selects_the_dockerfile_method(tmp_path):
    clone = _clone(tmp_path, {"Dockerfile": "FROM x\n", "api/Api.dockerfile": "FROM y\n"})
    method = methods.choose(_services(tmp_path), _request(), clone)
    assert (method.kind, method.dockerfile) == ("dockerfile", "Dockerfile")
    request = dict(_request(dockerfile_path="../api/Api.dockerfile"), base_directory="api")
    method = methods.choose(_services(tmp_path), request, clone)
    assert method.context_dir == os.path.realpath(os.path.join(clone, "api"))
    assert method.dockerfile == "Api.dockerfile"


def test_explicit_dockerfile_missing_is_not_found(tmp_path):
    clone = _clone(tmp_path, {"package.json": "{}"})
    with pytest.raises(AgentError) as err:
        methods.choose(_services(tmp_path, STANDIN_DIR), _request(deployment_method="dockerfile"), clone)
    assert err.value.code == "not_found" and err.value.field == "service.dockerfile_path"


def test_without_dockerfile_nixpacks_must_be_installed(tmp_path):
    clone = _clone(tmp_path, {"package.json": "{}"})
    with pytest.raises(AgentError) as err:
        methods.choose(_services(tmp_path), _request(), clone)
    assert err.value.code == "failed_precondition"
    assert err.value.message.startswith("no Dockerfile found and nixpacks is not installed: install")
    with pytest.raises(AgentError) as err:
        methods.choose(_services(tmp_path), _request(deployment_method="buildpack"), clone)
    assert err.value.message.startswith("nixpacks is not installed")


def test_nixpacks_plan_gets_the_request_commands(tmp_path):
    clone = _clone(tmp_path, {"package.json": json.dumps({"scripts": {"start": "node a.js"}}), "Dockerfile": "x"})
    request = dict(_request(deployment_method="nixpacks", start_command="node b.js"), build_command="make",
                   start_command="ignored", nixpacks_config={"variables": {"A": "1"}})
    method = methods.choose(_services(tmp_path, STANDIN_DIR), request, clone)
    assert method.kind == "nixpacks"
    plan = method.nixpacks_plan
    assert plan["start"] == {"cmd": "node b.js"} and plan["phases"]["build"] == {"cmds": ["make"]}
    assert plan["variables"]["A"] == "1" and plan["variables"]["NIXPACKS_NODE_VERSION"] == "22"


def test_compose_is_chosen_only_explicitly(tmp_path):
    clone = _clone(tmp_path, {"docker-compose.yml": "services: {}\n", "Dockerfile": "FROM x\n"})
    assert methods.choose(_services(tmp_path), _request(), clone).kind == "dockerfile"
    method = methods.choose(_services(tmp_path), _request(deployment_method="docker-compose"), clone)
    assert method.kind == "docker-compose" and method.context_dir == os.path.realpath(clone)


def test_compose_request_keys_and_aliases():
    request = _request(DeploymentMethod="docker-compose", compose_file="deploy/compose.yml",
                       compose_selected_services="web, api,web", compose_project_name="Shop.Prod",
                       compose_service_mode="selected")
    assert methods.compose_options(request) == {"compose_file": "deploy/compose.yml", "project": "Shop.Prod",
                                                "selected": ["web", "api"], "mode": "selected"}
    assert methods.compose_options(_request()) == {"compose_file": "docker-compose.yml", "project": None,
                                                   "selected": [], "mode": "all"}
    for bad in ({"docker_compose_selected_services": ["ok", "no spaces"]},
                {"docker_compose_selected_services": 7}, {"docker_compose_path": ""}):
        with pytest.raises(AgentError) as err:
            _request(**bad)
        assert err.value.code == "invalid_argument" and err.value.field.startswith("service.docker_compose")


def test_plan_record_per_method(tmp_path):
    clone = _clone(tmp_path, {"sub/Dockerfile": "FROM x\n"})
    source = {"clone_path": clone, "commit_sha": "a" * 40, "branch": "main"}
    method = methods.Method("dockerfile", os.path.realpath(os.path.join(clone, "sub")), dockerfile="Dockerfile")
    assert methods.plan_record(method, source, "http://git/x.git") == {
        "build_method": "dockerfile", "repo_url": "http://git/x.git", "branch": "main", "commit_sha": "a" * 40,
        "base_directory": "sub", "dockerfile_path": "Dockerfile"}
    plan = SimpleNamespace(project="pulseup-svc", files=["/c/docker-compose.yml"], workdir="/c", target="web")
    record = methods.plan_record(methods.Method("docker-compose", os.path.realpath(clone)), source, "u", plan)
    assert record["base_directory"] == "." and record["compose"] == {
        "project": "pulseup-svc", "files": ["/c/docker-compose.yml"], "workdir": "/c", "target": "web"}


def test_nixpacks_config_is_reported_on_the_first_clone_only():
    events = []
    ctx = CallContext(None, "test", emit=lambda event, data: events.append((event, data)))
    nix = methods.Method("nixpacks", "/x", nixpacks_plan={"providers": ["node"]})
    assert methods.report_nixpacks(ctx, "svc", nix, {"fresh": True}, {"build_method": "nixpacks"})
    assert methods.report_nixpacks(ctx, "svc", nix, {"fresh": False}, {"build_method": "dockerfile"})
    assert methods.report_nixpacks(ctx, "svc", nix, {"fresh": False}, None)
    assert not methods.report_nixpacks(ctx, "svc", nix, {"fresh": False}, {"build_method": "nixpacks"})
    assert not methods.report_nixpacks(ctx, "svc", methods.Method("dockerfile", "/x"), {"fresh": True}, None)
    assert events == [("update_nixpacks_config", {"service_uid": "svc", "config": {"providers": ["node"]}})] * 3


class _Compose:
    def __init__(self):
        self.calls = []

    def down(self, project, workdir, files, volumes):
        self.calls.append((project, workdir, files, volumes))
        return [f"{project}_web_1"]


def test_service_delete_takes_compose_projects_down(tmp_path):
    services = SimpleNamespace(cfg=_services(tmp_path).cfg, docker=None, compose=_Compose())
    deploy = DeployService(services)
    assert deploy.on_service_delete("svc", {"delete_volumes": False}) == {}
    deploy.history.save_plan("svc", {"build_method": "dockerfile"})
    assert deploy.on_service_delete("svc", {}) == {} and services.compose.calls == []
    deploy.history.save_plan("svc", {"build_method": "docker-compose", "compose": {
        "project": "pulseup-svc", "workdir": "/w", "files": ["/w/docker-compose.yml"]}})
    assert deploy.on_service_delete("svc", {"delete_volumes": True}) == {"containers_deleted": ["pulseup-svc_web_1"]}
    assert services.compose.calls == [("pulseup-svc", "/w", ["/w/docker-compose.yml"], True)]


def test_rollback_of_a_compose_service_is_refused(tmp_path):
    services = SimpleNamespace(cfg=_services(tmp_path).cfg, docker=None)
    deploy = DeployService(services)
    deploy.history.save_plan("svc", {"build_method": "docker-compose"})
    with pytest.raises(AgentError) as err:
        deploy.rollback(None, {"service_uid": "svc"})
    assert err.value.code == "failed_precondition"
