"""The console over plain HTTPS: login, session cookie, CSRF, logout, no data without a
session, escaping of hostile agent data, confirmation before revoking (docs/devserver.md,
"Web console")."""

import gevent

from agent.devserver.console import SESSION_COOKIE

HOSTILE = '<script>alert("x")</script>'
HOSTILE_ATTR = '"><img src=x onerror=alert(1)>'


def _cookie_header(resp, name):
    for value in resp.raw.headers.getlist("set-cookie"):
        if value.startswith(name + "="):
            return value
    return None


def test_root_without_session_shows_login_and_no_data(client, hostile_agent, devserver):
    uid = hostile_agent.identity.server_uid
    resp = client.get("/")
    assert resp.status_code == 200
    assert 'action="/console/login"' in resp.text and 'name="token"' in resp.text
    assert uid not in resp.text
    for path in ("/console/agents/%s" % uid, "/console/agents/%s/stream" % uid,
                 "/console/agents/%s/events/stream" % uid, "/console/agents/%s/databases" % uid):
        denied = client.get(path)
        assert denied.status_code == 401, path
        assert uid not in denied.text
    assert client.post("/console/agents/%s/revoke" % uid, {"confirm": "yes"}).status_code == 401
    assert not devserver.agents()[0]["revoked"]


def test_login_sets_a_random_strict_session_cookie(client, devserver):
    resp = client.login()
    assert resp.headers["location"] == "/"
    header = _cookie_header(resp, SESSION_COOKIE)
    assert header is not None
    flags = [part.strip() for part in header.split(";")]
    assert "HttpOnly" in flags and "Secure" in flags and "SameSite=Strict" in flags
    value = header.split(";")[0].split("=", 1)[1]
    assert len(value) >= 32 and value != devserver.admin_token
    assert devserver.admin_token not in str(resp.headers) + resp.text
    page = client.get("/")
    assert page.status_code == 200 and "<h1>Agents</h1>" in page.text
    second = type(client)(devserver)
    second.login()
    assert second.http.cookies[SESSION_COOKIE] != client.http.cookies[SESSION_COOKIE]


def test_wrong_token_gets_the_login_page_again(client):
    resp = client.post("/console/login", {"token": "not-the-token", "csrf": client.csrf("/")})
    assert resp.status_code == 401
    assert "Wrong admin token" in resp.text and 'name="token"' in resp.text
    assert _cookie_header(resp, SESSION_COOKIE) is None
    assert "<h1>Agents</h1>" not in client.get("/").text


def test_login_needs_its_csrf_token(client, devserver):
    client.get("/")                    # sets the login cookie
    resp = client.post("/console/login", {"token": devserver.admin_token})
    assert resp.status_code == 403 and _cookie_header(resp, SESSION_COOKIE) is None
    resp = client.post("/console/login", {"token": devserver.admin_token, "csrf": "forged"})
    assert resp.status_code == 403 and _cookie_header(resp, SESSION_COOKIE) is None


def test_every_post_needs_the_session_csrf_token(logged_in, hostile_agent, devserver):
    uid = hostile_agent.identity.server_uid
    for data in ({"confirm": "yes"}, {"confirm": "yes", "csrf": "forged"}):
        resp = logged_in.post("/console/agents/%s/revoke" % uid, data)
        assert resp.status_code == 403, resp.text
    assert not devserver.agents()[0]["revoked"]
    assert logged_in.post("/console/logout", {}).status_code == 403
    assert "<h1>Agents</h1>" in logged_in.get("/").text       # still logged in
    page = logged_in.get("/")
    assert page.text.count('name="csrf"') >= 2                # logout + revoke forms


def test_revoke_asks_for_confirmation(logged_in, hostile_agent, devserver):
    uid = hostile_agent.identity.server_uid
    csrf = logged_in.csrf("/")
    ask = logged_in.post("/console/agents/%s/revoke" % uid, {"csrf": csrf})
    assert ask.status_code == 200 and 'name="confirm" value="yes"' in ask.text
    assert not devserver.agents()[0]["revoked"]
    done = logged_in.post("/console/agents/%s/revoke" % uid, {"csrf": csrf, "confirm": "yes"})
    assert done.status_code == 303
    assert devserver.agents()[0]["revoked"]
    assert "revoked" in logged_in.get("/").text


def test_logout_ends_the_session(logged_in, devserver):
    old = logged_in.http.cookies[SESSION_COOKIE]
    resp = logged_in.post("/console/logout", {"csrf": logged_in.csrf("/")})
    assert resp.status_code == 303
    assert "Max-Age=0" in _cookie_header(resp, SESSION_COOKIE)
    replay = type(logged_in)(devserver)
    replay.http.cookies.set(SESSION_COOKIE, old)
    assert 'name="token"' in replay.get("/").text
    assert replay.get("/console/agents/x").status_code == 401


def _hostile_replies(frame):
    event = frame["event"]
    if event == "monitoring.container.metrics":
        return {"success": True, "data": {"c1": {
            "container_name": HOSTILE, "status": HOSTILE_ATTR,
            "labels": {"pulseup.service_uid": "svc-one"}}}}
    if event == "service.status.get":
        return {"success": True, "data": {"status": HOSTILE_ATTR, "health": HOSTILE,
                                          "containers": [{"name": HOSTILE, "status": HOSTILE_ATTR,
                                                          "image": HOSTILE}]}}
    return {"success": False, "error": HOSTILE, "code": "internal"}


def test_agent_strings_are_escaped(logged_in, hostile_agent, devserver):
    uid = hostile_agent.identity.server_uid
    hostile_agent.send({"type": "event", "event": "register_hardware_info",
                        "data": {"hostname": HOSTILE, "cpu_model": HOSTILE_ATTR}})
    hostile_agent.send({"type": "event", "event": "update_deployment_status",
                        "data": {"service_uid": "svc-one", "deployment_uid": "dep-1",
                                 "status": HOSTILE_ATTR, "image": HOSTILE}})
    hostile_agent.send({"type": "event", "event": "update_service_status",
                        "data": {"service_uid": HOSTILE_ATTR, "status": "running"}})
    hostile_agent.serve(_hostile_replies)
    with gevent.Timeout(10):
        while len(devserver.received_frames(uid)) < 3:
            gevent.sleep(0.05)
    pages = [logged_in.get("/"), logged_in.get("/console/agents/%s" % uid),
             logged_in.get("/console/agents/%s/services/svc-one" % uid)]
    for page in pages:
        assert page.status_code == 200, page.text
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in pages[0].text
    assert "svc-one" in pages[1].text and "&lt;img src=x" in pages[1].text
    assert "dep-1" in pages[2].text


def test_pages_carry_a_strict_content_security_policy(client):
    resp = client.get("/")
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["cache-control"] == "no-store"


def test_static_files_and_unknown_paths(client):
    js = client.get("/console/static/console.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in js.text
    assert client.get("/console/static/console.css").status_code == 200
    assert client.get("/console/static/..%2fconsole.py").status_code == 404
    assert client.get("/console/nothing-here").status_code == 404


def test_deploy_form_is_validated_before_any_call(logged_in, hostile_agent, devserver):
    uid = hostile_agent.identity.server_uid
    csrf = logged_in.csrf("/console/agents/%s/deploy" % uid)
    resp = logged_in.post("/console/agents/%s/deploy" % uid,
                          {"csrf": csrf, "service_uid": HOSTILE_ATTR, "git_url": "x",
                           "port": "8080"})
    assert resp.status_code == 400 and "Service uid" in resp.text
    assert "<img src=x" not in resp.text
    resp = logged_in.post("/console/agents/%s/deploy" % uid,
                          {"csrf": csrf, "service_uid": "ok", "git_url": "x", "port": "99999"})
    assert resp.status_code == 400 and "Container port" in resp.text
    assert devserver.console.jobs.for_agent(uid) == []
