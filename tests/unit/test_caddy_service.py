"""CaddyService transactions against a fake Caddy admin API on a real Unix socket."""

import json
import os
import socket

import gevent
import pytest
from gevent import pywsgi

from agent import config
from agent.errors import AgentError
from agent.handlers import domains as handler
from agent.services.context import CallContext
from agent.services import EventSink
from agent.services.caddy import CaddyService


class FakeCaddy:
    """POST /load (refused with 400 when ``refuse`` is set) and GET /config/."""

    def __init__(self, path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        here = os.getcwd()
        os.chdir(os.path.dirname(path))  # pytest paths may exceed the 107-byte limit
        try:
            self.listener.bind(os.path.basename(path))
        finally:
            os.chdir(here)
        self.listener.listen(16)
        self.loaded = []
        self.refuse = None
        self.server = pywsgi.WSGIServer(self.listener, self.app, log=None)
        self.server.start()

    def app(self, environ, start_response):
        if environ["REQUEST_METHOD"] == "POST" and environ["PATH_INFO"] == "/load":
            body = json.loads(environ["wsgi.input"].read())
            if self.refuse:
                start_response("400 Bad Request", [("Content-Type", "application/json")])
                return [json.dumps({"error": self.refuse}).encode()]
            self.loaded.append(body)
            start_response("200 OK", [])
            return [b""]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(self.loaded[-1] if self.loaded else None).encode()]

    def stop(self):
        self.server.stop()


class FakeProxyContainer:
    def __init__(self, caddy_dir):
        self.socket_path = os.path.join(caddy_dir, "run", "admin.sock")
        self.boot_config_path = os.path.join(caddy_dir, "config", "caddy.json")
        self.ensured = 0

    def prepare_dirs(self):
        os.makedirs(os.path.dirname(self.boot_config_path), exist_ok=True)

    def ensure(self):
        self.ensured += 1
        return object(), False


class FakeContainer:
    def __init__(self, name, labels=None, aliases=()):
        self.name = name
        self.attrs = {"Config": {"Labels": labels or {}},
                      "NetworkSettings": {"Networks": {"pulseup-net": {"Aliases": list(aliases)}}}}


class FakeDocker:
    def __init__(self):
        self.containers = {}

    def find_service_containers(self, uid):
        return self.containers.get(uid, [])

    def active_container(self, uid, containers=None):
        found = self.containers.get(uid, [])
        return found[0] if found else None

    def proxy_container(self):
        return None


@pytest.fixture
def env(tmp_path):
    cfg = config.defaults().replace(state_dir=str(tmp_path / "state"), caddy_tls_issuer="internal",
                                    caddy_https_port=8443, caddy_http_port=8080)
    events = []
    sink = EventSink()
    sink.target = lambda event, data: events.append((event, data))
    docker = FakeDocker()
    docker.containers["svc"] = [FakeContainer("pulseup-app-svc-v0001")]
    service = CaddyService(cfg, docker, sink, tls_check_delays=(0.01,))
    service.container = FakeProxyContainer(service.dir)
    caddy = FakeCaddy(service.container.socket_path)
    service.admin.socket_path = service.container.socket_path
    yield service, caddy, docker, events
    service.close()
    caddy.stop()


def dials(doc):
    out = []
    for route in doc["apps"]["http"]["servers"]["pulseup_https"]["routes"]:
        if "match" in route:
            out.append(route["handle"][0]["routes"][-1]["handle"][1]["upstreams"][0]["dial"])
    return out


def test_upsert_applies_persists_and_emits(env):
    service, caddy, _docker, events = env
    domain_info = service.upsert("svc", "Example.com", 8080)
    assert domain_info["domain"] == "example.com"
    assert domain_info["upstream_container"] == "pulseup-app-svc-v0001"
    assert domain_info["ssl"] is True and domain_info["ssl_status"] == "pending"
    assert dials(caddy.loaded[-1]) == ["pulseup-app-svc-v0001:8080"]
    with open(os.path.join(service.dir, "caddy.json")) as f:
        assert json.load(f) == caddy.loaded[-1]
    with open(service.container.boot_config_path) as f:
        assert json.load(f) == caddy.loaded[-1]
    assert [r["domain"] for r in service.store.load()] == ["example.com"]
    assert events[-1][0] == "domain_status_update"
    assert events[-1][1]["upstream_container"] == "pulseup-app-svc-v0001"


def test_refused_load_keeps_state_files_and_previous_document(env):
    service, caddy, _docker, events = env
    service.upsert("svc", "example.com", 8080)
    state_before = open(service.store.path).read()
    applied_before = open(os.path.join(service.dir, "caddy.json")).read()
    caddy.refuse = "loading new config: bad things"
    with pytest.raises(AgentError) as err:
        service.upsert("svc", "example.com", 9090)
    assert err.value.code == "internal" and "bad things" in err.value.message
    assert open(service.store.path).read() == state_before
    assert open(os.path.join(service.dir, "caddy.json")).read() == applied_before
    assert events[-1][1].get("error")
    assert not [n for n in os.listdir(service.dir) if ".tmp." in n]


def test_unreachable_proxy_is_unavailable(env):
    service, caddy, _docker, _events = env
    caddy.stop()
    os.unlink(service.container.socket_path)
    with pytest.raises(AgentError) as err:
        service.upsert("svc", "example.com", 8080)
    assert err.value.code == "unavailable"
    assert service.store.load() == []


def test_domain_of_another_service_conflicts(env):
    service, _caddy, docker, _events = env
    docker.containers["other"] = [FakeContainer("pulseup-app-other-v0001")]
    service.upsert("svc", "example.com", 8080, redirect_www="to_www")
    with pytest.raises(AgentError) as err:
        service.upsert("other", "example.com", 8080)
    assert err.value.code == "conflict"
    with pytest.raises(AgentError) as err:  # www.example.com is served by the redirect
        service.upsert("other", "www.example.com", 8080)
    assert err.value.code == "conflict"


def test_upsert_without_active_container_is_not_found(env):
    service, caddy, _docker, _events = env
    with pytest.raises(AgentError) as err:
        service.upsert("ghost", "example.com", 8080)
    assert err.value.code == "not_found"
    assert caddy.loaded == []


def test_switch_repoints_only_that_service(env):
    service, caddy, docker, _events = env
    docker.containers["other"] = [FakeContainer("pulseup-app-other-v0003")]
    service.upsert("svc", "a.example.com", 8080)
    service.upsert("svc", "b.example.com", 8080)
    service.upsert("other", "c.example.com", 3000)
    assert service.switch("svc", "pulseup-app-svc-v0002", 8081) == 2
    assert dials(caddy.loaded[-1]) == ["pulseup-app-svc-v0002:8081", "pulseup-app-svc-v0002:8081",
                                      "pulseup-app-other-v0003:3000"]


def test_switch_without_domains_returns_at_once(env):
    service, caddy, _docker, _events = env
    assert service.switch("svc", "pulseup-app-svc-v0002", 8080) == 0
    assert caddy.loaded == [] and service.container.ensured == 0


def test_remove_and_remove_service(env):
    service, caddy, _docker, _events = env
    service.upsert("svc", "a.example.com", 8080)
    service.upsert("svc", "b.example.com", 8080)
    with pytest.raises(AgentError) as err:
        service.remove("other", "a.example.com")
    assert err.value.code == "not_found"
    assert service.remove("svc", "A.example.com.") == "a.example.com"
    assert dials(caddy.loaded[-1]) == ["pulseup-app-svc-v0001:8080"]
    assert service.remove_service("svc") == 1
    assert dials(caddy.loaded[-1]) == [] and service.store.load() == []
    assert service.remove_service("svc") == 0


def test_compose_service_is_reached_through_its_alias(env):
    service, _caddy, docker, _events = env
    labels = {"com.docker.compose.project": "pulseup-web", "com.docker.compose.service": "app",
              "pulseup.service_uid": "web"}
    db = dict(labels, **{"com.docker.compose.service": "db"})
    docker.containers["web"] = [FakeContainer("pulseup-web_db_1", db),
                                FakeContainer("pulseup-web_app_1", labels, ["pulseup-web-app", "abc"])]
    assert service.upstream_for("web") == "pulseup-web-app"


def test_status_runs_a_tls_check_and_records_it(env):
    service, _caddy, _docker, events = env
    service.upsert("svc", "example.com", 8080)
    domain_info = service.status("svc", "example.com")
    assert domain_info["ssl_status"] == "pending"  # nothing listens on 8443 here
    assert domain_info["ssl_error"] and domain_info["last_checked"]
    service.upsert("svc", "plain.example.com", 8080, managed_certificate=False)
    assert service.status("svc", "plain.example.com")["ssl_status"] == "disabled"
    with pytest.raises(AgentError) as err:
        service.status("svc", "nope.example.com")
    assert err.value.code == "not_found" and err.value.message == "domain not found"


def test_scheduled_tls_checks_run_after_apply(env):
    service, _caddy, _docker, _events = env
    service.upsert("svc", "example.com", 8080)
    gevent.sleep(0.3)
    assert service.store.load()[0].get("last_checked")
    assert service._checks == {}


def test_handler_shapes_replies_and_failures(env):
    service, _caddy, _docker, _events = env

    class Services:
        proxy = service
        cfg = service.cfg

    ctx = CallContext(Services(), "service.domain.manage")
    reply = handler.manage(ctx, {"action": "add_domain", "service_uid": "svc", "domain": "a.example.com",
                                 "port": 8080, "protocol": "http", "redirect_www": "none", "ssl": False})
    assert reply["success"] and reply["domain"] == "a.example.com"
    assert reply["domain_info"]["managed_certificate"] is False
    assert reply["domain_info"]["force_https"] is False
    reply = handler.manage(ctx, {"action": "domain_status", "service_uid": "svc", "domain": "a.example.com"})
    assert reply["domain_info"]["ssl_status"] == "disabled"
    with pytest.raises(AgentError) as err:
        handler.manage(ctx, {"action": "add", "service_uid": "svc", "domain": "*.a.com", "port": 1,
                             "protocol": "http", "redirect_www": "none"})
    assert err.value.code == "invalid_argument"
    # the registered error_details (applied by the dispatcher to every failure) add success and message
    details = handler._failure_details(err.value)
    assert details["success"] is False and details["message"] == err.value.message
    with pytest.raises(AgentError) as err:
        handler.manage(ctx, {"action": "frobnicate", "service_uid": "svc", "domain": "a.com"})
    assert err.value.code == "unimplemented"
