"""Compose method: safety allow-list, project names, selection, override file, tool runner."""

import json
import os
import shutil

import pytest

from agent import config
from agent.errors import AgentError
from agent.services import compose
from agent.services.compose import ComposePlan, ComposeService


@pytest.fixture
def svc(tmp_path):
    return ComposeService(config.defaults().replace(state_dir=str(tmp_path / "state")), docker=None)


def cfg_with(service):
    return {"services": {"web": service}}


@pytest.mark.parametrize("service", [
    {"privileged": True}, {"devices": ["/dev/sda:/dev/sda"]}, {"cap_add": ["SYS_ADMIN"]},
    {"security_opt": ["apparmor=unconfined"]}, {"pid": "host"}, {"ipc": "host"},
    {"network_mode": "host"}, {"userns_mode": "host"},
    {"volumes": ["/var/run:/var/run"]}, {"volumes": ["/var/run/docker.sock:/s:ro"]},
    {"volumes": [{"type": "bind", "source": "/etc", "target": "/x"}]},
    {"volumes": ["../outside:/x"]},
])
def test_unsafe_services_are_refused(svc, tmp_path, service):
    clone = tmp_path / "clone"
    clone.mkdir()
    cwd = os.getcwd()
    os.chdir(clone)  # relative sources resolve like compose resolves them: from the project dir
    try:
        with pytest.raises(AgentError) as err:
            svc.validate(cfg_with(service), str(clone))
    finally:
        os.chdir(cwd)
    assert err.value.code == "failed_precondition"
    assert "PULSEUP_COMPOSE_ALLOW_PRIVILEGED" in err.value.message


def test_symlink_escaping_the_clone_is_refused(svc, tmp_path):
    clone = tmp_path / "clone"
    clone.mkdir()
    os.symlink("/var/run", clone / "run")
    with pytest.raises(AgentError):
        svc.validate(cfg_with({"volumes": [f"{clone}/run:/x"]}), str(clone))


def test_volume_device_outside_is_refused(svc, tmp_path):
    config_ = {"services": {"web": {"volumes": ["data:/data"]}},
               "volumes": {"data": {"driver_opts": {"type": "none", "o": "bind", "device": "/var/run"}}}}
    with pytest.raises(AgentError) as err:
        svc.validate(config_, str(tmp_path))
    assert "volume device" in err.value.message


def test_safe_services_pass(svc, tmp_path):
    (tmp_path / "static").mkdir()
    config_ = {"services": {
        "web": {"volumes": [f"{tmp_path}/static:/srv:ro", "data:/data",
                            {"type": "volume", "source": "cache", "target": "/cache"},
                            {"type": "tmpfs", "target": "/tmp"}],
                "network_mode": "bridge", "pid": "", "privileged": False},
        "db": None}, "volumes": {"data": None, "cache": {}}}
    svc.validate(config_, str(tmp_path))


def test_policy_can_be_lifted(tmp_path):
    svc = ComposeService(config.defaults().replace(pulseup_compose_allow_privileged=True), None)
    svc.validate(cfg_with({"privileged": True, "volumes": ["/:/host"]}), str(tmp_path))


@pytest.mark.parametrize("uid, requested, expected", [
    ("App.One", None, "pulseup-app-one"), ("svc", "My.Project", "my-project"), ("svc", None, "pulseup-svc")])
def test_project_names(uid, requested, expected):
    assert compose.project_name(uid, requested) == expected


@pytest.mark.parametrize("requested", ["bad name!", "project\n", "-x"])
def test_bad_project_name_is_refused(requested):
    with pytest.raises(AgentError) as err:
        compose.project_name("svc", requested)
    assert err.value.code == "invalid_argument"


def plan_of(*services):
    return ComposePlan("pulseup-x", "/w", ["/w/docker-compose.yml"], list(services),
                       config={"services": {s: {} for s in services}})


def test_selection_rules():
    plan = plan_of("db", "web")
    compose._select(plan, ["web"], "all", True)
    assert plan.target == "web" and plan.alias == "pulseup-x-web" and plan.up_services == []
    plan = plan_of("web")
    compose._select(plan, [], "all", True)
    assert plan.target == "web"
    with pytest.raises(AgentError) as err:
        compose._select(plan_of("db", "web"), [], "all", True)
    assert err.value.message.endswith("select exactly one service")
    plan = plan_of("db", "web")
    compose._select(plan, [], "all", False)
    assert plan.target is None
    with pytest.raises(AgentError):
        compose._select(plan_of("web"), ["nope"], "all", False)
    plan = plan_of("db", "web", "cron")
    compose._select(plan, ["web"], "selected", True)
    assert plan.up_services == ["web"]


def test_override_file_labels_every_service_and_ports_only_the_target(svc):
    plan = plan_of("db", "web")
    plan.config["services"]["db"] = {"networks": {"back": None}}
    plan.version = "3.8"
    compose._select(plan, ["web"], "all", True)
    path = svc.write_override(plan, "x", "dep1", [{"external": 8080, "internal": 80},
                                                 {"external": 0, "internal": 9000}],
                              {"A": "b", "D": "a$b ${X} $$"})
    try:
        assert os.stat(path).st_mode & 0o777 == 0o600
        doc = json.load(open(path))
    finally:
        os.unlink(path)
    assert doc["version"] == "3.8"
    assert doc["networks"] == {"pulseup-net": {"external": True}}
    web, db = doc["services"]["web"], doc["services"]["db"]
    for entry in (web, db):
        assert entry["labels"] == {"pulseup.managed": "true", "pulseup.service_uid": "x",
                                   "pulseup.deployment_uid": "dep1"}
        assert entry["environment"] == {"A": "b", "D": "a$$b $${X} $$$$"}   # compose's literal $
    assert web["ports"] == ["8080:80"] and "ports" not in db
    assert web["networks"] == {"default": None, "pulseup-net": {"aliases": ["pulseup-x-web"]}}
    assert db["networks"] == {"pulseup-net": None}


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_plan_with_real_compose_config_refuses_var_run(tmp_path):
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "docker-compose.yml").write_text(
        "services:\n  web:\n    image: busybox\n    volumes:\n      - /var/run:/var/run\n"
        "  worker:\n    image: busybox\n")
    svc = ComposeService(config.defaults(), None)
    with pytest.raises(AgentError) as err:
        svc.plan("svc", str(clone), selected=["web"], needs_target=True)
    assert err.value.code == "failed_precondition" and "/var/run" in err.value.message


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_plan_finds_overrides_and_services(tmp_path):
    clone = tmp_path / "clone"
    (clone / "app").mkdir(parents=True)
    (clone / "app" / "docker-compose.yml").write_text(
        "version: '3.8'\nservices:\n  web:\n    image: busybox\n    volumes: ['./static:/srv']\n")
    (clone / "app" / "docker-compose.override.yml").write_text(
        "version: '3.8'\nservices:\n  worker:\n    image: busybox\n")
    svc = ComposeService(config.defaults(), None)
    plan = svc.plan("Svc.1", str(clone), "app", selected="web", needs_target=True)
    assert plan.services == ["web", "worker"] and plan.target == "web"
    assert plan.project == "pulseup-svc-1" and plan.version == "3.8"
    assert [os.path.basename(f) for f in plan.files] == ["docker-compose.yml", "docker-compose.override.yml"]


def test_compose_file_outside_the_clone_is_refused(svc, tmp_path):
    clone = tmp_path / "clone"
    clone.mkdir()
    (tmp_path / "evil.yml").write_text("services: {}\n")
    with pytest.raises(AgentError) as err:
        svc.plan("svc", str(clone), compose_file="../evil.yml")
    assert err.value.field == "docker_compose_path"
    os.symlink(tmp_path / "evil.yml", clone / "docker-compose.yml")
    with pytest.raises(AgentError):
        svc.plan("svc", str(clone))


def test_run_tool_streams_lines_and_reports_failures(tmp_path):
    lines = []
    out = compose.run_tool(["sh", "-c", "echo out; echo Creating x >&2; echo bad >&2"],
                           compose.child_environment(), str(tmp_path), "sh",
                           on_line=lambda text, level: lines.append((text, level)))
    assert out == ""
    assert ("out", "INFO") in lines and ("Creating x", "INFO") in lines and ("bad", "ERROR") in lines
    with pytest.raises(AgentError) as err:
        compose.run_tool(["sh", "-c", "echo boom >&2; exit 3"], compose.child_environment(), None, "sh")
    assert err.value.code == "command_failed"
    assert err.value.details["exit_code"] == 3 and "boom" in err.value.details["stderr_tail"]
    with pytest.raises(AgentError) as err:
        compose.run_tool(["/nonexistent/tool"], compose.child_environment(), None, "tool")
    assert err.value.code == "failed_precondition"
    assert compose.run_tool(["echo", "hi"], compose.child_environment(), None, "echo", capture=True) == "hi\n"


def test_child_environment_has_no_agent_secrets(monkeypatch):
    monkeypatch.setenv("JOIN_TOKEN", "secret-token")
    env = compose.child_environment(DOCKER_HOST="unix:///x.sock", EMPTY=None)
    assert "JOIN_TOKEN" not in env and env["DOCKER_HOST"] == "unix:///x.sock" and "EMPTY" not in env


class _Removable:
    def __init__(self, name, removed):
        self.name, self._removed = name, removed

    def remove(self, **kwargs):
        self._removed.append(self.name)


class _FakeDocker:
    """Containers, networks and volumes of one compose project, filtered by label."""

    def __init__(self):
        self.removed, self.filters = [], []
        removed = self.removed
        self.client = type("Client", (), {})()
        self.client.networks = type("Networks", (), {"list": lambda _, filters: self._listed(
            filters, [_Removable("pulseup-svc_default", removed)])})()
        self.client.volumes = type("Volumes", (), {"list": lambda _, filters: self._listed(
            filters, [_Removable("pulseup-svc_data", removed)])})()

    def _listed(self, filters, items):
        self.filters.append(filters)
        return items

    def list_containers(self, labels=(), all=True):
        assert list(labels) == ["com.docker.compose.project=pulseup-svc"]
        return [_Removable("pulseup-svc_web_1", self.removed)]


def test_down_without_files_removes_the_project_through_docker(tmp_path):
    docker = _FakeDocker()
    service = ComposeService(config.defaults(), docker=docker)
    gone = str(tmp_path / "gone" / "docker-compose.yml")
    assert service.down("pulseup-svc", str(tmp_path), [gone], volumes=False) == ["pulseup-svc_web_1"]
    assert docker.removed == ["pulseup-svc_web_1", "pulseup-svc_default"]
    assert docker.filters == [{"label": ["com.docker.compose.project=pulseup-svc"]}]
    docker.removed.clear()
    service.down("pulseup-svc", None, [], volumes=True)
    assert docker.removed == ["pulseup-svc_web_1", "pulseup-svc_default", "pulseup-svc_data"]


def test_compose_environment_pins_what_a_repository_env_file_could_set(tmp_path):
    env = ComposeService(config.defaults(), None).environment()
    assert env["DOCKER_HOST"] == compose.DEFAULT_DOCKER_HOST
    assert env["DOCKER_CERT_PATH"] == env["DOCKER_TLS_VERIFY"] == env["COMPOSE_FILE"] == ""
    env = ComposeService(config.defaults().replace(docker_host="unix:///x.sock"), None).environment()
    assert env["DOCKER_HOST"] == "unix:///x.sock"


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_plan_checks_the_resolved_document_and_the_dot_env(tmp_path):
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "docker-compose.yml").write_text(
        "services:\n  web:\n    image: busybox\n    volumes: ['${DATA:-./data}:/data']\n")
    svc = ComposeService(config.defaults(), None)
    assert svc.plan("svc", str(clone)).services == ["web"]        # interpolation is fine
    (clone / ".env").write_text("DATA=/var/run\n")
    with pytest.raises(AgentError) as err:                         # ... but resolved, it is /var/run
        svc.plan("svc", str(clone))
    assert err.value.code == "failed_precondition" and "volumes: /var/run" in err.value.message
    (clone / ".env").unlink()
    (tmp_path / "outside.env").write_text("DATA=./data\n")
    os.symlink(tmp_path / "outside.env", clone / ".env")
    with pytest.raises(AgentError) as err:
        svc.plan("svc", str(clone))
    assert err.value.code == "failed_precondition" and ".env" in err.value.message


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_down_of_files_that_fail_the_policy_goes_through_docker(tmp_path, monkeypatch):
    """A refused commit stays in the clone: ``down --volumes`` on it would remove the volume
    of another project that the file names."""
    (tmp_path / "docker-compose.yml").write_text(
        "services:\n  web:\n    image: busybox\n    volumes: ['data:/d']\n"
        "volumes:\n  data:\n    name: pulseup-other_db\n")
    ran = []
    real = compose.run_tool
    monkeypatch.setattr(compose, "run_tool", lambda argv, *a, **k: ran.append(argv) or real(argv, *a, **k))
    docker = _FakeDocker()
    service = ComposeService(config.defaults(), docker=docker)
    service.down("pulseup-svc", str(tmp_path), [str(tmp_path / "docker-compose.yml")], volumes=True)
    assert not [argv for argv in ran if "down" in argv]
    assert docker.removed == ["pulseup-svc_web_1", "pulseup-svc_default", "pulseup-svc_data"]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_up_checks_the_files_again(tmp_path):
    """Between plan and up (a build slot wait) a container with the clone mounted can change it."""
    clone = tmp_path / "clone"
    (clone / "static").mkdir(parents=True)
    (clone / "docker-compose.yml").write_text("services:\n  web:\n    image: busybox\n"
                                              "    volumes: ['./static:/srv']\n")
    svc = ComposeService(config.defaults(), docker=None)   # refused before Docker is used
    plan = svc.plan("svc", str(clone))
    os.rmdir(clone / "static")
    os.symlink("/var/run", clone / "static")
    with pytest.raises(AgentError) as err:
        svc.up(plan, "/nonexistent-override.yml", 10, None)
    assert err.value.code == "failed_precondition" and "static" in err.value.message


class _Labelled:
    def __init__(self, name, labels):
        self.name, self.attrs = name, {"Config": {"Labels": labels}}


class _OwnerDocker:
    def __init__(self, containers):
        self.containers, self.network = containers, False

    def list_containers(self, labels=(), all=True):
        return self.containers

    def ensure_network(self):
        self.network = True


def test_up_refuses_a_project_that_holds_another_services_containers(monkeypatch):
    monkeypatch.setattr(ComposeService, "command", lambda self: (["docker-compose"], 1))
    docker = _OwnerDocker([_Labelled("pulseup-victim_db_1", {"pulseup.service_uid": "victim"})])
    plan = ComposePlan("pulseup-victim", "/w", ["/w/docker-compose.yml"], ["web"], service_uid="attacker")
    with pytest.raises(AgentError) as err:
        ComposeService(config.defaults(), docker).up(plan, "/o.yml", 10, None)
    assert err.value.code == "failed_precondition" and "pulseup-victim_db_1" in err.value.message
    assert err.value.field == "service.docker_compose_project_name" and not docker.network
    docker.containers = [_Labelled("pulseup-victim_db_1", {"pulseup.service_uid": "victim"})]
    plan.service_uid = "victim"
    monkeypatch.setattr(compose, "run_tool", lambda *a, **k: "")
    monkeypatch.setattr(ComposeService, "wait_ready", lambda self, plan, timeout, ctx=None: [])
    ComposeService(config.defaults(), docker).up(plan, "/o.yml", 10, None)   # its own: fine
    assert docker.network
