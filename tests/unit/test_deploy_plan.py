"""Deploy planning pieces: request schemas, port mappings, paths, env calls, names, history, targets."""
import os

import pytest

from agent.errors import AgentError
from agent.protocol.events import CATALOGUE
from agent.handlers import deploy as handlers
from agent.services.context import CallContext
from agent.protocol.fields import load_request
from agent.services.build import declared_args, select_build_args
from agent.services.deploy import request as req
from agent.services.deploy.history import BuildHistory
from agent.services.deploy.images import image_uid
from agent.services.deploy.rollback import select_target
from agent.services.deploy.swap import container_env, container_name

BASE = {"service_uid": "svc", "deployment_uid": "dep-1"}


def _deploy(**fields):
    return load_request(handlers.DeployRequest(), {**BASE, **fields})


def _refused(schema, data):
    with pytest.raises(AgentError) as info:
        load_request(schema, data)
    assert info.value.code == "invalid_argument"
    return info.value.field


@pytest.mark.parametrize("fields,field", [
    ({"service_uid": "../x"}, "service_uid"),
    ({"deployment_uid": "a/b"}, "deployment_uid"),
    ({"github_branch": "--upload-pack=x"}, "github_branch"),
    ({"commit_sha": "zz"}, "commit_sha"),
    ({"commit_sha": "abcdef1", "last_commit_sha": "abcdef2"}, "commit_sha"),
    ({"env_vars": {"1BAD": "x"}}, "env_vars"),
    ({"env_vars": {"A": 1}}, "env_vars"),
    ({"env_vars": {"A": "nul\x00"}}, "env_vars"),
    ({"port_mappings": [{"external": "80", "internal": 80}]}, "port_mappings.0.external"),
    ({"port_mappings": [{"external": 80, "internal": 0}]}, "port_mappings.0.internal"),
    ({"internal_port": 8080.5}, "internal_port"),
    ({"cpu_limit": 0.001}, "cpu_limit"),
    ({"memory_limit": "1m"}, "memory_limit"),
    ({"memory_limit": "12 bananas"}, "memory_limit"),
    ({"health_check_path": "health"}, "health_check_path"),
    ({"health_timeout_seconds": 2}, "health_timeout_seconds"),
    ({"drain_seconds": 301}, "drain_seconds"),
    ({"access_token": "has space"}, "access_token"),
    ({"service": {"deployment_method": "magic"}}, "service.deployment_method"),
])
def test_deploy_request_refusals(fields, field):
    assert _refused(handlers.DeployRequest(), {**BASE, **fields}) == field


def test_deploy_request_forms():
    request = _deploy(cpu_limit="1.5", memory_limit="512Mi", last_commit_sha="ABCDEF1",
                      Service={"DeploymentMethod": "buildpack", "external_port": 9000,
                               "port_mappings": '{"external": 0, "internal": 3000}'})
    assert request["cpu_limit"] == 1.5 and request["memory_limit"] == 512 * 1024**2
    assert request["commit_sha"] == "abcdef1"
    assert request["service"]["deployment_method"] == "nixpacks"
    assert request["service"]["exposed_port"] == 9000
    assert request["service"]["port_mappings"] == [{"external": 0, "internal": 3000}]
    assert "env_vars" not in request and "github_repo" not in request
    assert _deploy(env_vars={})["env_vars"] == {}


def test_rollback_and_stream_schemas():
    rollback = handlers.RollbackRequest()
    assert load_request(rollback, {"service_uid": "s", "target_version": "pulseup-app-s:abcdef123456"})
    assert load_request(rollback, {"service_uid": "s", "target_version": "abcdef"})
    assert _refused(rollback, {"service_uid": "s", "target_version": "abc"}) == "target_version"
    assert _refused(rollback, {"service_uid": "s", "commit_sha": "xyz123"}) == "commit_sha"
    start = handlers.StreamStartRequest()
    loaded = load_request(start, {"deployment_uid": "d", "offsets": {"Build": 10}})
    assert loaded["offsets"] == {"build": 10} and loaded["flush_interval_ms"] == 1000
    assert _refused(start, {"deployment_uid": "d", "offsets": {"deploy": -1}}) == "offsets.deploy"
    assert _refused(start, {"deployment_uid": "d", "flush_interval_ms": 100}) == "flush_interval_ms"


def test_port_mappings_resolution():
    assert req.port_mappings({"internal_port": 8080}) == [{"external": 0, "internal": 8080}]
    assert req.port_mappings({"service": {"internal_port": 80, "exposed_port": 8081}}) == [
        {"external": 8081, "internal": 80}]
    mappings = [{"external": 0, "internal": 80}, {"external": 0, "internal": 80},
                {"external": 9000, "internal": 81}, {"external": 9000, "internal": 82}]
    assert req.port_mappings({"port_mappings": mappings, "internal_port": 1}) == mappings[::2]
    assert req.port_mappings({}) == []
    with pytest.raises(AgentError):
        req.dedupe_mappings([{"external": 0, "internal": port} for port in range(1, 40)])


def test_resolve_inside_follows_symlinks(tmp_path):
    (tmp_path / "repo" / "sub").mkdir(parents=True)
    os.symlink("/etc", tmp_path / "repo" / "escape")
    root = str(tmp_path / "repo")
    assert req.resolve_inside(root, "sub", "base_directory") == os.path.realpath(root + "/sub")
    for bad in ("escape", "../", "/etc", "sub/../../x"):
        with pytest.raises(AgentError) as info:
            req.resolve_inside(root, bad, "base_directory")
        assert info.value.field == "base_directory"


def test_dockerfile_paths_skip_vendor_dirs(tmp_path):
    for path in ("Dockerfile", "api/api.dockerfile", "node_modules/x/Dockerfile", ".git/Dockerfile", "README"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    assert req.dockerfile_paths(str(tmp_path)) == ["Dockerfile", "api/api.dockerfile"]


class _Ctx(CallContext):
    def __init__(self, reply):
        super().__init__(None, "test", call_server=lambda event, data, timeout: reply)


def test_env_from_the_control_plane():
    env = req.resolve_env(_Ctx({"env_vars": {"A": "1", "B": 2, "C": True, "D": None}}), {"service_uid": "s"})
    assert env == {"A": "1", "B": "2", "C": "true"}
    assert req.resolve_env(_Ctx({"X": "y"}), {"service_uid": "s"}) == {"X": "y"}
    assert req.resolve_env(_Ctx({"boom": 1}), {"service_uid": "s", "env_vars": {}}) == {}
    for reply in ({"error": "nope"}, {"A": {"nested": 1}}, ["list"]):
        with pytest.raises(AgentError) as info:
            req.resolve_env(_Ctx(reply), {"service_uid": "s"})
        assert info.value.code == "unavailable"


def test_repo_from_the_control_plane():
    ctx = _Ctx({"repo_url": "octo/app", "access_token": "server-token"})
    normalize = lambda url: "https://github.com/" + url + ".git"  # noqa: E731
    assert req.resolve_repo(ctx, {"service_uid": "s"}, normalize) == ("https://github.com/octo/app.git",
                                                                     "server-token")
    assert req.resolve_repo(ctx, {"service_uid": "s", "access_token": "mine"}, normalize)[1] == "mine"
    with pytest.raises(AgentError) as info:
        req.resolve_repo(_Ctx({"error": "no repo"}), {"service_uid": "s"}, normalize)
    assert info.value.code == "unavailable"


def test_names():
    assert container_name("svc", 7) == "pulseup-app-svc-v0007"
    assert container_name("svc", 12345, candidate=True) == "pulseup-app-svc-v12345-candidate"
    assert image_uid("my-app.v2") == "my-app.v2"
    odd = image_uid("My_App")
    assert odd.startswith("my_app-") or odd.startswith("my-app-")
    assert image_uid("My_App") != image_uid("my_App") and image_uid("A..b").startswith("a-b-")


def test_container_env_recomputes_reserved_keys():
    env = container_env({"PORT": "1", "PULSEUP_X": "y", "APP": "z"}, [{"external": 9000, "internal": 8080}])
    assert env == {"APP": "z", "PORT": "8080", "PULSEUP_PRIMARY_EXTERNAL_PORT": "9000"}


def test_build_args_only_declared():
    text = "FROM x\n# ARG COMMENTED\nARG A \\\n    B=2\narg api_token\nRUN echo\n"
    assert declared_args(text) == ["A", "B", "api_token"]
    args, secret = select_build_args(text, {"A": "1", "api_token": "t", "OTHER": "o"})
    assert args == {"A": "1", "api_token": "t"} and secret == ["api_token"]


def test_history_keeps_ten_and_replaces_same_image(tmp_path):
    history = BuildHistory(str(tmp_path))
    for n in range(12):
        history.record("s", {"image_name": f"img:{n}", "commit_sha": f"{n:040x}", "success": True})
    history.record("s", {"image_name": "img:5", "commit_sha": "again"})
    entries = history.load("s")
    assert [e["image_name"] for e in entries][:3] == ["img:5", "img:11", "img:10"]
    assert len(entries) == 10 and [e["image_name"] for e in entries].count("img:5") == 1
    assert oct(os.stat(tmp_path / "s" / "build_history.json").st_mode & 0o777) == "0o640"
    assert history.remove("s") and history.load("s") == []


def test_rollback_target_selection():
    history = [{"image_name": "r:3", "commit_sha": "ccc333", "deployment_uid": "d3"},
               {"image_name": "r:2", "commit_sha": "bbb222", "deployment_uid": "d2"},
               {"image_name": "r:1", "commit_sha": "aaa111", "deployment_uid": "d1"}]
    assert select_target(history, {"deployment_uid": "d1"})["image_name"] == "r:1"
    assert select_target(history, {"target_version": "r:2"})["image_name"] == "r:2"
    assert select_target(history, {"target_version": "aaa111"})["image_name"] == "r:1"
    assert select_target(history, {"commit_sha": "BBB"})["image_name"] == "r:2"
    assert select_target(history, {}, active_image="r:3")["image_name"] == "r:2"
    for request in ({"deployment_uid": "nope"}, {"commit_sha": "ddd"}):
        with pytest.raises(AgentError) as info:
            select_target(history, request)
        assert info.value.code == "not_found"


def test_heartbeat_runs_until_stopped(monkeypatch):
    import gevent

    from agent.services.deploy import pipeline

    monkeypatch.setattr(pipeline, "HEARTBEAT_INTERVAL", 0.02)
    events = []
    ctx = CallContext(None, "service.app.deploy", emit=lambda e, d: events.append((e, d, CATALOGUE[e].durable)))
    services = type("S", (), {"spawn": staticmethod(lambda name, func: gevent.spawn(func))})()
    reporter = pipeline.Reporter(services, ctx, "svc", "dep")
    reporter.start_heartbeat()
    gevent.sleep(0.1)
    reporter.stop_heartbeat()
    gevent.sleep(0.05)
    count = len(events)
    gevent.sleep(0.1)
    assert count >= 2 and len(events) == count
    assert events[0][0] == "deployment_heartbeat" and events[0][1]["deployment_uid"] == "dep"
    assert events[0][2] is False          # dropped while disconnected (docs/protocol.md, "Outbound events")


def test_dockerfile_paths_skip_names_that_are_not_utf8(tmp_path):
    """A repository file named b"Dockerfile.\\xff" once muted the agent through this event."""
    from agent.protocol import envelope
    root = os.fsencode(str(tmp_path))
    for name in (b"Dockerfile", b"Dockerfile.\xff", b"dir\xfe/Dockerfile"):
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").close()
    paths = req.dockerfile_paths(str(tmp_path))
    assert paths == ["Dockerfile"]
    envelope.encode({"dockerfile_paths": paths})     # strict: would raise on a surrogate
