"""The agent's Caddy on real Docker: domains over HTTP and HTTPS (tls internal), zero-downtime
switch, restart recovery, refused changes (issue 9 "Done when")."""
import json
import os

import gevent
import pytest
from tests.integration.proxy.proxysupport import http_get, https_get, wait_for_body
from harness import wait_until

from agent.errors import AgentError
from agent.handlers import domains as handler
from agent.services.context import CallContext
from agent.protocol.fields import load_request
from agent.services.caddy import service as caddy_service

pytestmark = pytest.mark.integration


def manage(services, **request):
    ctx = CallContext(services, "service.domain.manage")
    return handler.manage(ctx, load_request(handler.DomainManageSchema(), request))


def test_domain_served_over_http_and_verified_https(proxy_env, apps):
    services, events = proxy_env
    cfg = services.cfg
    apps.start("web1", 1, "hello-web1")
    reply = manage(services, action="add", service_uid="web1", domain="Web1.Example.test",
                   port=8080, force_https=False)
    assert reply["domain_info"]["upstream_container"] == "pulseup-app-web1-v0001"
    wait_for_body(cfg, "web1.example.test", "hello-web1")
    status, body, _ = http_get(cfg, "unknown.example.test")
    assert status == 404

    def tls_active():
        return manage(services, action="status", service_uid="web1",
                      domain="web1.example.test")["domain_info"]["ssl_status"] == "active"
    wait_until(tls_active, "certificate of web1.example.test active", timeout=30)
    line, body = https_get(cfg, "web1.example.test")
    assert " 200 " in line and body.strip() == "hello-web1"
    assert any(e["ssl_status"] == "active" for e in events.of("domain_status_update"))


def test_force_https_and_www_redirects(proxy_env, apps):
    services, _events = proxy_env
    cfg = services.cfg
    apps.start("web2", 1, "hello-web2")
    manage(services, action="upsert", service_uid="web2", domain="example2.test", port=8080,
           redirect_www="to_www")
    status, _, headers = http_get(cfg, "example2.test", "/a?b=1")
    assert status == 308
    assert headers["Location"] == f"https://www.example2.test:{cfg.caddy_https_port}/a?b=1"
    wait_until(lambda: services.proxy.check_tls("example2.test")["ssl_status"] == "active",
               "certificate of www.example2.test", timeout=30)
    line, _ = https_get(cfg, "example2.test", "/x")
    assert " 301 " in line
    line, body = https_get(cfg, "www.example2.test")
    assert " 200 " in line and body.strip() == "hello-web2"


def test_switch_under_load_sees_no_failure(proxy_env, apps):
    services, _events = proxy_env
    cfg = services.cfg
    apps.start("web3", 1, "v1")
    manage(services, action="add", service_uid="web3", domain="web3.example.test", port=8080,
           ssl=False)
    wait_for_body(cfg, "web3.example.test", "v1")
    seen, failures, running = [], [], [True]

    def load():
        while running[0]:
            try:
                status, body, _ = http_get(cfg, "web3.example.test")
                (seen if status == 200 else failures).append(body.strip() or status)
            except Exception as exc:  # noqa: BLE001 - every failure counts
                failures.append(repr(exc))
            gevent.sleep(0.01)

    loop = gevent.spawn(load)
    try:
        gevent.sleep(0.5)
        new = apps.start("web3", 2, "v2")
        gevent.sleep(1.0)  # the new container's httpd is up long before this
        assert services.proxy.switch("web3", new, 8080) == 1
        gevent.sleep(0.5)
        apps.stop("pulseup-app-web3-v0001")  # the pipeline stops the old one after the switch
        gevent.sleep(1.0)
    finally:
        running[0] = False
        loop.join(timeout=10)
    assert failures == []
    assert seen[0] == "v1" and seen[-1] == "v2" and len(seen) > 20


def test_proxy_restarted_by_hand_comes_back_with_routes(proxy_env, apps, docker_client):
    services, _events = proxy_env
    cfg = services.cfg
    apps.start("web4", 1, "hello-web4")
    manage(services, action="add", service_uid="web4", domain="web4.example.test", port=8080,
           ssl=False)
    wait_for_body(cfg, "web4.example.test", "hello-web4")
    docker_client.containers.get("pulseup-caddy").restart(timeout=5)
    wait_for_body(cfg, "web4.example.test", "hello-web4", timeout=30)
    # and the agent can still configure it through the socket
    manage(services, action="remove", service_uid="web4", domain="web4.example.test")
    assert http_get(cfg, "web4.example.test")[0] == 404


def test_refused_changes_leave_previous_config_serving(proxy_env, apps, monkeypatch):
    services, _events = proxy_env
    cfg = services.cfg
    apps.start("web5", 1, "hello-web5")
    manage(services, action="add", service_uid="web5", domain="web5.example.test", port=8080,
           ssl=False)
    wait_for_body(cfg, "web5.example.test", "hello-web5")
    state_path = os.path.join(cfg.state_dir, "caddy", "domains.v2.json")
    state_before = open(state_path).read()
    for hostile in ("a.com\n}", "*.a.com", "1.2.3.4"):
        with pytest.raises(AgentError) as err:
            manage(services, action="add", service_uid="web5", domain=hostile, port=8080)
        assert err.value.code == "invalid_argument"

    real = caddy_service.build_document

    def broken(*args, **kwargs):  # a document Caddy refuses (unknown handler module)
        doc = real(*args, **kwargs)
        doc["apps"]["http"]["servers"]["pulseup_http"]["routes"][0]["handle"] = [
            {"handler": "no_such_handler"}]
        return doc

    monkeypatch.setattr(caddy_service, "build_document", broken)
    with pytest.raises(AgentError) as err:
        manage(services, action="add", service_uid="web5", domain="web5.example.test", port=9999,
               ssl=False)
    assert err.value.code == "internal" and "no_such_handler" in err.value.message
    assert open(state_path).read() == state_before
    wait_for_body(cfg, "web5.example.test", "hello-web5", timeout=5)
    applied = json.load(open(os.path.join(cfg.state_dir, "caddy", "caddy.json")))
    assert "no_such_handler" not in json.dumps(applied)


def test_reapply_recreates_a_removed_or_changed_proxy(proxy_env, apps, docker_client):
    services, _events = proxy_env
    cfg = services.cfg
    apps.start("web6", 1, "hello-web6")
    manage(services, action="add", service_uid="web6", domain="web6.example.test", port=8080,
           ssl=False)
    wait_for_body(cfg, "web6.example.test", "hello-web6")
    docker_client.containers.get("pulseup-caddy").remove(force=True)
    assert services.proxy.reapply() is True  # agent start-up
    wait_for_body(cfg, "web6.example.test", "hello-web6")
    first = docker_client.containers.get("pulseup-caddy")
    assert first.labels["pulseup.component"] == "caddy" and first.labels["pulseup.managed"] == "true"
    assert first.attrs["Config"]["User"] == f"{os.getuid()}:{os.getgid()}"
    # a stopped proxy is started again by the next apply, which then succeeds
    first.stop(timeout=5)
    manage(services, action="remove", service_uid="web6", domain="web6.example.test")
    assert http_get(cfg, "web6.example.test")[0] == 404
