"""The proxy's admin API down during a domain change (issue 13; docs/commands.md, "Domains and the proxy").

The worker (a real process) runs ``pulseup-caddy`` on the private engine. While its admin
socket is unreachable, ``service.domain.manage`` upsert answers ``unavailable`` with a clear
message, the proxy state files keep their bytes, and the routes already loaded keep serving;
once the admin API is back the same change applies. A stopped proxy container is started
again by the change itself.
"""

import os

import gevent
import pytest
import requests

from tests.resilience import faults_support as fs
from tests.resilience.faults_support import fault_env, home  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration
FIRST, SECOND = "first.faults.test", "second.faults.test"
STATE_FILES = ("domains.v2.json", "caddy.json", os.path.join("config", "caddy.json"))


@pytest.fixture
def proxied(fault_env, home, devserver):
    """A worker, an app deployed and FIRST routed to it over plain HTTP."""
    env, uid = fault_env, fs.unique("proxied")
    env.image("app")
    worker = fs.WorkerProcess(home, devserver, CADDY_IMAGE=env.image("caddy"))
    try:
        _, sha = env.git.add_repo(uid, {"Dockerfile": fs.app_dockerfile(), "index.html": "proxied one\n"})
        worker.start()
        deployed = worker.call("service.app.deploy", fs.deploy_request(env, uid, "dep-1", sha))
        assert deployed["success"], deployed
        assert _upsert(worker, uid, FIRST)["success"]
        _wait_body(home, FIRST, 200, "proxied one")
        yield worker, uid
    finally:
        worker.stop()
        fs.remove_service(env, uid)
        fs.remove_container(env, "pulseup-caddy")


def _upsert(worker, uid, domain):
    return worker.call("service.domain.manage", {"action": "upsert", "service_uid": uid, "domain": domain,
                                                 "port": 8080, "ssl": False}, timeout=150)


def _get(home, host):
    response = fs.HTTP.get(f"http://127.0.0.1:{home.http_port}/", headers={"Host": host}, timeout=5)
    return response.status_code, response.text.strip()


def _wait_body(home, host, status, body, timeout=30):
    seen = None
    with gevent.Timeout(timeout, AssertionError(f"{host}: wanted {status} {body!r}, last {seen}")):
        while True:
            try:
                seen = _get(home, host)
            except requests.RequestException as exc:
                seen = repr(exc)
            if seen == (status, body):
                return
            gevent.sleep(0.2)


def _state(home):
    caddy = os.path.join(home.dir("state"), "caddy")
    result = {}
    for name in STATE_FILES:
        with open(os.path.join(caddy, name), "rb") as handle:
            result[name] = handle.read()
    return result


def test_admin_socket_unreachable(proxied, home):
    worker, uid = proxied
    before = _state(home)
    socket_path = os.path.join(home.dir("state"), "caddy", "run", "admin.sock")
    os.rename(socket_path, socket_path + ".away")         # Caddy runs on, nobody reaches its API
    try:
        reply = _upsert(worker, uid, SECOND)
        assert (reply["success"], reply["code"]) == (False, "unavailable"), reply
        assert "proxy admin API unreachable" in reply["error"]
        assert _state(home) == before
        assert _get(home, FIRST) == (200, "proxied one")
        assert _get(home, SECOND)[0] == 404
    finally:
        os.rename(socket_path + ".away", socket_path)
    _wait_body(home, FIRST, 200, "proxied one")
    assert _upsert(worker, uid, SECOND)["success"]
    _wait_body(home, SECOND, 200, "proxied one")
    assert _state(home)["domains.v2.json"] != before["domains.v2.json"]


def test_proxy_container_stopped(proxied, home, fault_env):
    worker, uid = proxied
    fault_env.client.containers.get("pulseup-caddy").stop(timeout=10)
    reply = _upsert(worker, uid, SECOND)              # the change starts the proxy again
    assert reply["success"], reply
    _wait_body(home, FIRST, 200, "proxied one")
    _wait_body(home, SECOND, 200, "proxied one")


def test_proxy_container_paused(proxied, home, fault_env):
    """A paused proxy is not a stopped one: the change unpauses it (its admin socket stays
    in place) and applies, instead of deleting the live socket and failing ever after."""
    worker, uid = proxied
    container = fault_env.client.containers.get("pulseup-caddy")
    container.pause()
    try:
        reply = _upsert(worker, uid, SECOND)
    finally:
        container.reload()
        if container.status == "paused":
            container.unpause()
    assert reply["success"], reply
    assert container.status == "running"
    _wait_body(home, FIRST, 200, "proxied one")
    _wait_body(home, SECOND, 200, "proxied one")