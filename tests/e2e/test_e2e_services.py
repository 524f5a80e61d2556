"""service.start|stop|restart|delete, service.domain.manage and cancelling a running operation
through the wire (docs/commands.md, "Operations", "Domains and the proxy", "Lifecycle"), against
the agent's own Caddy container."""

import os
import re

import gevent
import pytest

from tests.e2e.apps import app_files, deploy_request, proxy_get, service_containers, unique, wait_body
from tests.e2e.wire import RFC3339

covers = pytest.mark.covers


@pytest.fixture(scope="module")
def app(wire, git_server):
    uid = unique("e2e-svc")
    _, sha = git_server.add_repo(uid, app_files("svc"))
    data = wire.ok("service.app.deploy", deploy_request(git_server, uid, f"{uid}-d1", sha), timeout=300)
    yield uid, data["container_name"], sha
    wire.call("service.delete", {"service_uid": uid, "purge_files": True}, timeout=120)


def service_status(wire, uid, since):
    return [e["status"] for e in wire.events("update_service_status", since, lambda e: e["service_uid"] == uid)]


@covers("service.stop", "service.start", "service.restart", outcome="success")
def test_stop_start_restart(app, wire, docker_client):
    uid, name, _ = app
    mark = wire.mark()
    stopped = wire.ok("service.stop", {"service_uid": uid}, timeout=120)
    assert stopped["service_uid"] == uid and stopped["stopped_containers"] == [name]
    assert docker_client.containers.get(name).status == "exited"
    wire.wait_events("update_service_status", lambda e: e["service_uid"] == uid and e["status"] == "stopped", mark)
    assert service_status(wire, uid, mark) == ["stopping", "stopped"]
    stop = wire.wait_event("container_stopped", lambda e: e["container_name"] == name, mark, timeout=30)
    assert stop["expected"] is True and stop["service_uid"] == uid and stop["action"] in ("stop", "die", "kill")
    assert stop["container_id"] == docker_client.containers.get(name).id
    assert wire.ok("service.stop", {"service_uid": uid})["stopped_containers"] == []      # already stopped: fine
    assert wire.ok("service.status.get", {"service_uid": uid})["status"] == "stopped"

    mark = wire.mark()
    started = wire.ok("service.start", {"service_uid": uid}, timeout=120)
    assert started == {"service_uid": uid, "container": name, "containers": [name], "message": started["message"]}
    assert started["message"] and docker_client.containers.get(name).status == "running"
    running = wire.wait_event("update_service_status", lambda e: e["service_uid"] == uid and e["status"] == "running",
                              mark)
    assert re.match(RFC3339, running["timestamp"]) and "error" not in running

    mark = wire.mark()
    restarted = wire.ok("service.restart", {"service_uid": uid}, timeout=120)
    assert restarted["container"] == name and restarted["containers"] == [name] and restarted["message"]
    wire.wait_events("update_service_status", lambda e: e["service_uid"] == uid and e["status"] == "running", mark)
    assert service_status(wire, uid, mark)[:2] == ["restarting", "running"]
    assert wire.ok("service.status.get", {"service_uid": uid})["status"] == "running"


@covers("service.stop", "service.start", "service.restart", "service.delete", outcome="refusal")
def test_lifecycle_refusals(wire):
    nothing = unique("e2e-none")
    wire.refused("service.start", {"service_uid": nothing}, "not_found")
    wire.refused("service.restart", {"service_uid": nothing}, "not_found")
    wire.refused("service.stop", {"service_uid": "a/b"}, "invalid_argument", field="service_uid")
    wire.refused("service.start", {"service_uid": nothing, "timeout_seconds": 601}, "invalid_argument")
    wire.refused("service.delete", {"service_uid": "..", "purge_files": True}, "invalid_argument", field="service_uid")
    wire.refused("service.delete", {"service_uid": nothing, "delete_volumes": "yes"}, "invalid_argument",
                 field="delete_volumes")


@covers("service.domain.manage", outcome="success")
def test_domain_upsert_status_and_remove_through_the_proxy(app, wire, e2e_agent):
    uid, name, _ = app
    domain = f"{uid}.example.test"
    mark = wire.mark()
    added = wire.ok("service.domain.manage", {"action": "add", "service_uid": uid, "domain": domain.upper() + ".",
                                              "port": 8080, "managed_certificate": False}, timeout=120)
    assert added["success"] is True and added["domain"] == domain and added["message"]
    info = added["domain_info"]
    assert info["domain"] == domain and info["service_uid"] == uid and info["upstream_container"] == name
    assert info["port"] == 8080 and info["protocol"] == "http" and info["force_https"] is False
    assert info["managed_certificate"] is False and info["ssl"] is False and info["ssl_status"] == "disabled"
    assert info["redirect_www"] == "none" and re.match(RFC3339, info["last_applied"])
    wait_body(e2e_agent.env, domain, "svc\n")
    assert proxy_get(e2e_agent.env, "unknown.example.test")[0] == 404
    update = wire.wait_event("domain_status_update", lambda e: e["domain"] == domain, mark)
    assert update["service_uid"] == uid and update["ssl_status"] == "disabled" and update["upstream_container"] == name
    status = wire.ok("service.domain.manage", {"action": "status", "service_uid": uid, "domain": domain})
    assert status["success"] is True and status["domain_info"]["upstream_container"] == name
    removed = wire.ok("service.domain.manage", {"action": "remove", "service_uid": uid, "domain": domain}, timeout=120)
    assert removed["success"] is True and removed["domain"] == domain and removed["message"]
    assert proxy_get(e2e_agent.env, domain)[0] == 404


def _domain_refused(wire, data, code):
    """docs/commands.md, `service.domain.manage`: every failure's data also carries success and message, refusals
    by the request schema included."""
    reply = wire.refused("service.domain.manage", data, code, timeout=120)
    assert reply["data"]["success"] is False and reply["data"]["message"], (data, reply)
    return reply


@covers("service.domain.manage", outcome="refusal")
def test_domain_refusals(app, wire):
    uid = app[0]
    for bad in ("*.example.test", "example", "1.2.3.4", "a..example.test", "-x.example.test"):
        _domain_refused(wire, {"action": "add", "service_uid": uid, "domain": bad, "port": 8080}, "invalid_argument")
    missing_port = wire.refused("service.domain.manage", {"action": "add", "service_uid": uid,
                                                          "domain": "p.example.test"}, "invalid_argument", field="port")
    assert missing_port["data"]["success"] is False and missing_port["data"]["message"], missing_port
    _domain_refused(wire, {"action": "status", "service_uid": uid, "domain": "never.example.test"}, "not_found")
    _domain_refused(wire, {"action": "remove", "service_uid": uid, "domain": "never.example.test"}, "not_found")
    _domain_refused(wire, {"action": "add", "service_uid": unique("e2e-none"), "domain": "lonely.example.test",
                           "port": 8080, "managed_certificate": False}, "not_found")
    _domain_refused(wire, {"action": "rename", "service_uid": uid, "domain": "p.example.test"}, "unimplemented")


@covers("agent.operations.cancel", "agent.operations.list", outcome="success")
def test_cancel_a_deploy_waiting_for_its_readiness_gate(wire, git_server, docker_client):
    """A deploy whose app never listens: heartbeats while it waits, then cancelled by its
    deployment_uid, the candidate removed and the call answered ``cancelled``."""
    uid = unique("e2e-slow")
    _, sha = git_server.add_repo(uid, app_files("slow", delay=600))
    dep = f"{uid}-d1"
    mark = wire.mark()
    call = gevent.spawn(wire.call, "service.app.deploy", deploy_request(git_server, uid, dep, sha), 300)
    try:
        wire.wait_event("update_deployment_status", lambda e: e["deployment_uid"] == dep
                        and e.get("phase") == "health_check", mark, timeout=120)
        # docs/commands.md, `deployment_heartbeat`: every 20 s from the first in_progress until the terminal status
        beat = wire.wait_event("deployment_heartbeat", lambda e: e["deployment_uid"] == dep, mark, timeout=60)
        assert set(beat) == {"deployment_uid", "timestamp"}
        (operation,) = wire.ok("agent.operations.list", {"service_uid": uid})["operations"]
        assert operation["operation_id"] == f"deploy:{dep}" and operation["kind"] == "deploy"
        assert operation["command"] == "service.app.deploy" and operation["state"] == "running"
        assert operation["service_uid"] == uid and operation["deployment_uid"] == dep
        assert operation["phase"] == "health_check"
        for key in ("received_at", "started_at", "deadline_at"):
            assert re.match(RFC3339, operation[key]), operation
        cancelled = wire.ok("agent.operations.cancel", {"deployment_uid": dep, "reason": "e2e"})
        assert cancelled == {"operation_id": f"deploy:{dep}", "state": "cancelling"}
        reply = call.get(timeout=120)
    finally:
        call.kill()
    assert reply["success"] is False and reply["code"] == "cancelled", reply
    assert reply["data"]["operation_id"] == f"deploy:{dep}"
    terminal = wire.wait_event("update_deployment_status", lambda e: e["deployment_uid"] == dep
                               and e["status"] != "in_progress", mark, timeout=30)
    assert terminal["status"] == "cancelled" and terminal["code"] == "cancelled"
    assert service_containers(docker_client, uid) == []       # the candidate is gone
    assert wire.ok("agent.operations.list", {"service_uid": uid}) == {"operations": []}
    wire.ok("service.delete", {"service_uid": uid, "purge_files": True}, timeout=120)


@covers("service.delete", outcome="success")
@covers("service.domain.manage", outcome="refusal")
def test_delete_removes_containers_domain_images_and_files(app, wire, git_server, docker_client, e2e_agent):
    uid = unique("e2e-del")
    _, sha = git_server.add_repo(uid, app_files("del"))
    deployed = wire.ok("service.app.deploy", deploy_request(git_server, uid, f"{uid}-d1", sha), timeout=300)
    domain = f"{uid}.example.test"
    wire.ok("service.domain.manage", {"action": "add", "service_uid": uid, "domain": domain, "port": 8080,
                                      "managed_certificate": False}, timeout=120)
    wait_body(e2e_agent.env, domain, "del\n")
    # one domain cannot serve two services (docs/commands.md, "Domains and the proxy")
    _domain_refused(wire, {"action": "add", "service_uid": app[0], "domain": domain, "port": 8080}, "conflict")
    data = wire.ok("service.delete", {"service_uid": uid, "purge_files": True}, timeout=120)
    assert data["service_uid"] == uid and data["containers_deleted"] == [deployed["container_name"]]
    assert data["deletion_count"] == 1 and data["domains_removed"] == [domain] and data["message"]
    assert sorted(data["images_removed"]) == sorted([deployed["image"], f"pulseup-app:{uid}"])
    assert data["volumes_removed"] == []
    home = e2e_agent.env
    assert os.path.join(home["APPS_DIR"], uid) in data["paths_removed"]
    assert service_containers(docker_client, uid) == [] and not docker_client.images.list(name=f"pulseup-app-{uid}")
    assert proxy_get(e2e_agent.env, domain)[0] == 404
    again = wire.ok("service.delete", {"service_uid": uid, "purge_files": True}, timeout=120)
    assert again["containers_deleted"] == [] and again["domains_removed"] == [] and again["images_removed"] == []
