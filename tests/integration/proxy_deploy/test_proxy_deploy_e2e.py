"""A Dockerfile app deployed by the agent and served through the agent's Caddy for its domain:
HTTP with the Host header and HTTPS (tls internal) verified against Caddy's local root; a second
commit deployed under a request loop without a failed request; a release failing its gate
leaves the old one serving; rollback switches back; service.delete removes the route."""
import gevent
from harness import wait_until
from harness.gitserver import APP_DOCKERFILE
from pdsupport import LoadLoop, http_get, https_get, wait_for_body

BROKEN_DOCKERFILE = """\
FROM pulseup-test/appbase:latest
CMD ["sh", "-c", "echo broken release; exit 3"]
"""


def deploy(agent, git_server, uid, dep, sha, **extra):
    data = {"service_uid": uid, "deployment_uid": dep, "github_repo": f"{git_server.base_url}/{uid}.git",
            "access_token": git_server.token, "github_branch": "main", "commit_sha": sha,
            "internal_port": 8080, "drain_seconds": 1, "health_timeout_seconds": 20, "env_vars": {}}
    data.update(extra)
    return agent.call("service.app.deploy", data)


def upstream_of(agent, uid, domain):
    reply = agent.call("service.domain.manage", {"action": "status", "service_uid": uid, "domain": domain})
    assert reply["success"], reply
    return reply["data"]["domain_info"]


def test_domain_follows_deploys_gate_failure_rollback_and_delete(pd_agent, git_server, track):
    uid, domain = "pd-web", "pd-web.example.test"
    cfg = pd_agent.cfg
    track(uid)
    _, sha1 = git_server.add_repo(uid, {"Dockerfile": APP_DOCKERFILE, "index.html": "version one\n"})
    sha2 = git_server.commit(uid, {"index.html": "version two\n"}, message="second")
    sha3 = git_server.commit(uid, {"Dockerfile": BROKEN_DOCKERFILE}, message="broken")

    first = deploy(pd_agent, git_server, uid, "pd-dep-1", sha1)
    assert first["success"], first
    added = pd_agent.call("service.domain.manage", {"action": "add", "service_uid": uid, "domain": domain,
                                                    "port": 8080, "force_https": False})
    assert added["success"], added
    assert added["data"]["domain_info"]["upstream_container"] == f"pulseup-app-{uid}-v0001"
    wait_for_body(cfg, domain, "version one")
    assert http_get(cfg, "unknown.example.test")[0] == 404

    # HTTPS: the internal issuer's certificate verifies against Caddy's local root
    wait_until(lambda: upstream_of(pd_agent, uid, domain)["ssl_status"] == "active",
               f"certificate of {domain}", timeout=30)
    line, body = https_get(cfg, domain)
    assert " 200 " in line and body.strip() == "version one"

    # zero downtime: the domain is re-pointed before the old container stops
    with LoadLoop(cfg, domain) as load:
        gevent.sleep(0.3)
        second = deploy(pd_agent, git_server, uid, "pd-dep-2", sha2)
        gevent.sleep(0.5)
    assert second["success"], second
    assert load.failures == []
    assert load.seen[0] == "version one" and load.seen[-1] == "version two" and len(load.seen) > 20
    assert upstream_of(pd_agent, uid, domain)["upstream_container"] == f"pulseup-app-{uid}-v0002"

    # a release that fails its readiness gate: the old one keeps serving, the route is unchanged
    with LoadLoop(cfg, domain) as load:
        third = deploy(pd_agent, git_server, uid, "pd-dep-3", sha3, health_timeout_seconds=5)
    assert not third["success"] and third["code"] == "health_check_failed", third
    assert load.failures == [] and set(load.seen) == {"version two"}
    assert upstream_of(pd_agent, uid, domain)["upstream_container"] == f"pulseup-app-{uid}-v0002"

    back = pd_agent.call("service.deploy.rollback", {"service_uid": uid, "commit_sha": sha1[:8],
                                                     "drain_seconds": 0})
    assert back["success"], back
    assert upstream_of(pd_agent, uid, domain)["upstream_container"] == back["data"]["container_name"]
    wait_for_body(cfg, domain, "version one", timeout=10)
    line, body = https_get(cfg, domain)
    assert " 200 " in line and body.strip() == "version one"

    deleted = pd_agent.call("service.delete", {"service_uid": uid})
    assert deleted["success"], deleted
    assert deleted["data"]["domains_removed"] == [domain]
    assert http_get(cfg, domain)[0] == 404
    assert pd_agent.services.proxy.domains_of(uid) == []
    switched = [e for e in pd_agent.events_named("domain_status_update") if e["domain"] == domain]
    assert [e["upstream_container"] for e in switched][:1] == [f"pulseup-app-{uid}-v0001"]
    assert f"pulseup-app-{uid}-v0002" in [e["upstream_container"] for e in switched]
