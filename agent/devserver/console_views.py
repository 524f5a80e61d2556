"""The console's pages and actions (routes registered on `console.PAGES`).

GET handlers render; POST handlers (CSRF-checked by the dispatcher) start a job and
redirect, or ask for confirmation first when the action destroys something (revoke,
restore). Path parameters match the uid rule of docs/commands.md before any use.
"""

import re
import secrets
import time

import gevent.pool

from agent.devserver import console_html as html_
from agent.devserver import console_pages as pages
from agent.devserver.console import (SECURITY_HEADERS, ConsoleError, html, page_route,
                                     redirect)
from agent.devserver.console_jobs import SERVICE_EVENTS, call
from agent.devserver.console_stream import agent_stream, deployment_stream
from agent.devserver.http import Response

UID = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
UID_RE = re.compile(r"^%s\Z" % UID)
AGENT = "/console/agents/(?P<uid>%s)" % UID
SERVICE = AGENT + "/services/(?P<svc>%s)" % UID
DATABASE = AGENT + "/databases/(?P<svc>%s)" % UID
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}\Z")
PROXY_SERVICE = "svc_pulseup_caddy"
READ_TIMEOUT_S = 10


def _agent(console, uid):
    for agent in console.server.agents():
        if agent["server_uid"] == uid:
            return agent
    raise ConsoleError(404, "unknown agent")


def _base(uid):
    return "/console/agents/%s" % uid


def _sse(stream):
    return Response(200, content_type="text/event-stream", stream=stream,
                    headers=[("cache-control", "no-cache")] + SECURITY_HEADERS[:-1])


# What the console knows about an agent's services -----------------------------------------

def discover(console, uid):
    """service_uid -> {"kind": "app"/"database", "type"}: from received events, console jobs
    and the containers' labels (monitoring samples)."""
    found = {}
    for frame in console.server.received_frames(uid):
        data = frame.get("data")
        if frame.get("event") in SERVICE_EVENTS and isinstance(data, dict):
            kind = "database" if frame["event"].startswith("backup") else "app"
            _note(found, data.get("service_uid"), kind)
    for job in console.jobs.for_agent(uid):
        _note(found, job.service_uid, "database" if job.kind == "database" else "app")
    reply = call(console.server, uid, "monitoring.container.metrics", {}, READ_TIMEOUT_S)
    for item in (reply.get("data") or {}).values() if reply.get("success") else ():
        labels = item.get("labels") if isinstance(item, dict) else None
        if isinstance(labels, dict):
            db_type = labels.get("pulseup.database_type")
            _note(found, labels.get("pulseup.service_uid"), "database" if db_type else "app",
                  db_type)
    return found


def _note(found, service_uid, kind, db_type=None):
    if not isinstance(service_uid, str) or not UID_RE.match(service_uid) \
            or service_uid == PROXY_SERVICE:
        return
    entry = found.setdefault(service_uid, {"kind": kind, "type": None})
    if kind == "database":
        entry["kind"] = "database"
        entry["type"] = db_type or entry["type"]


def statuses(console, uid, found):
    """service.status.get of every service, asked in parallel."""
    def one(item):
        service_uid, meta = item
        reply = call(console.server, uid, "service.status.get", {"service_uid": service_uid},
                     READ_TIMEOUT_S)
        data = reply.get("data") if reply.get("success") and isinstance(reply.get("data"),
                                                                         dict) else {}
        return dict(data, service_uid=service_uid, kind=meta["kind"], type=meta["type"],
                    error=data.get("error") or ("" if reply.get("success") else reply.get("error")))
    return gevent.pool.Pool(8).map(one, sorted(found.items()))


def deployments(console, uid, service_uid):
    """The deployments of a service seen by this dev server, newest first."""
    latest = {}
    for frame in console.server.received_frames(uid):
        data = frame.get("data")
        if frame.get("event") != "update_deployment_status" or not isinstance(data, dict) \
                or data.get("service_uid") != service_uid:
            continue
        dep = data.get("deployment_uid")
        if isinstance(dep, str) and UID_RE.match(dep):
            entry = latest.setdefault(dep, {"deployment_uid": dep})
            entry.update({k: data[k] for k in ("status", "commit_sha", "image", "timestamp")
                          if data.get(k) is not None})
    return sorted(latest.values(), key=lambda d: d.get("timestamp") or 0, reverse=True)


# Agents ----------------------------------------------------------------------------------

@page_route("GET", "/")
def agents(console, req, session):
    return html(html_.agents_page(session, console.server.agents()))


@page_route("POST", AGENT + "/revoke")
def revoke(console, req, session):
    uid = req.params["uid"]
    _agent(console, uid)
    if req.form.get("confirm") != "yes":
        return html(html_.confirm_page(
            session, "Revoke %s" % uid, "Revoke every certificate of agent %s and close its "
            "connection? It will have to enroll again." % uid, "%s/revoke" % _base(uid), "",
            "Revoke", "/"))
    console.server.revoke(uid)
    return redirect("/")


@page_route("GET", AGENT)
def agent_page(console, req, session):
    uid = req.params["uid"]
    agent = _agent(console, uid)
    services = statuses(console, uid, discover(console, uid)) if agent.get("connected") else []
    return html(pages.agent_page(session, agent, services, console.jobs.for_agent(uid)))


@page_route("GET", AGENT + "/stream")
def agent_events(console, req, session):
    return _sse(agent_stream(console.server, _agent(console, req.params["uid"])["server_uid"]))


@page_route("GET", AGENT + "/events")
def events_page(console, req, session):
    uid = _agent(console, req.params["uid"])["server_uid"]
    return html(pages.events_page(session, uid))


@page_route("GET", AGENT + "/events/stream")
def events_stream(console, req, session):
    uid = _agent(console, req.params["uid"])["server_uid"]
    return _sse(agent_stream(console.server, uid, stats=False))


# Services --------------------------------------------------------------------------------

@page_route("GET", SERVICE)
def service_page(console, req, session):
    uid, service_uid = req.params["uid"], req.params["svc"]
    _agent(console, uid)
    svc = statuses(console, uid, {service_uid: {"kind": "app", "type": None}})[0]
    return html(pages.service_page(session, uid, svc, deployments(console, uid, service_uid)))


@page_route("POST", SERVICE + "/(?P<action>start|stop|restart)")
def lifecycle(console, req, session):
    uid, service_uid, action = req.params["uid"], req.params["svc"], req.params["action"]
    _agent(console, uid)
    console.jobs.start(uid, "lifecycle", "%s %s" % (action.capitalize(), service_uid),
                       "service." + action, {"service_uid": service_uid}, 700, service_uid)
    return redirect("%s/services/%s" % (_base(uid), service_uid))


@page_route("POST", SERVICE + "/rollback")
def rollback(console, req, session):
    uid, service_uid = req.params["uid"], req.params["svc"]
    dep = req.form.get("deployment_uid", "")
    if not UID_RE.match(dep):
        raise ConsoleError(400, "deployment_uid is not a valid uid")
    _agent(console, uid)
    console.jobs.start(uid, "rollback", "Roll back %s to %s" % (service_uid, dep),
                       "service.deploy.rollback", {"service_uid": service_uid,
                                                   "deployment_uid": dep}, 700, service_uid)
    return redirect("%s/services/%s" % (_base(uid), service_uid))


@page_route("GET", SERVICE + "/logs")
def service_logs(console, req, session):
    uid = _agent(console, req.params["uid"])["server_uid"]
    return _sse(console.log_followers.stream(uid, req.params["svc"]))


# Deploy ----------------------------------------------------------------------------------

@page_route("GET", AGENT + "/deploy")
def deploy_form(console, req, session):
    uid = _agent(console, req.params["uid"])["server_uid"]
    return html(pages.deploy_page(session, uid, {}))


@page_route("POST", AGENT + "/deploy")
def deploy_submit(console, req, session):
    uid = _agent(console, req.params["uid"])["server_uid"]
    try:
        request, domain = parse_deploy(req.form)
    except ValueError as e:
        return html(pages.deploy_page(session, uid, req.form, str(e)), 400)
    console.jobs.deploy(uid, request, domain)
    return redirect("%s/deployments/%s" % (_base(uid), request["deployment_uid"]))


def parse_deploy(form):
    """The `service.app.deploy` request and the domain from the deploy form (ValueError)."""
    service_uid = form.get("service_uid", "").strip()
    if not UID_RE.match(service_uid):
        raise ValueError("Service uid: letters, digits, '_', '.', '-' (up to 64), "
                         "starting with a letter or digit.")
    url = form.get("git_url", "").strip()
    if not url:
        raise ValueError("Git URL is required.")
    request = {"service_uid": service_uid, "github_repo": url, "env_vars": parse_env(form),
               "deployment_uid": "dep-%d-%s" % (time.time(), secrets.token_hex(3)),
               "internal_port": _port(form.get("port", "").strip() or "8080")}
    optional = (("access_token", "access_token"), ("branch", "github_branch"),
                ("commit", "commit_sha"))
    for name, key in optional:
        if form.get(name, "").strip():
            request[key] = form[name].strip()
    return request, form.get("domain", "").strip().lower() or None


def _port(text):
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError("Container port must be a number from 1 to 65535.")
    return int(text)


def parse_env(form):
    env = {}
    for number, line in enumerate(form.get("env", "").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not ENV_KEY.match(key.strip()):
            raise ValueError("Environment line %d is not KEY=value." % number)
        env[key.strip()] = value
    return env


@page_route("GET", AGENT + "/deployments/(?P<dep>%s)" % UID)
def deployment_page(console, req, session):
    uid, dep = _agent(console, req.params["uid"])["server_uid"], req.params["dep"]
    job = console.jobs.find(uid, dep)
    service_uid = job.service_uid if job else _deployment_service(console, uid, dep)
    return html(pages.deployment_page(session, uid, dep, service_uid))


def _deployment_service(console, uid, dep):
    for frame in console.server.received_frames(uid):
        data = frame.get("data")
        if isinstance(data, dict) and data.get("deployment_uid") == dep:
            return data.get("service_uid")
    return None


@page_route("GET", AGENT + "/deployments/(?P<dep>%s)/stream" % UID)
def deployment_events(console, req, session):
    uid = _agent(console, req.params["uid"])["server_uid"]
    return _sse(deployment_stream(console.server, console.jobs, uid, req.params["dep"]))


# The databases pages live in console_db.
from agent.devserver import console_db  # noqa: E402,F401
