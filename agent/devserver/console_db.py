"""The console's databases page: deploy a database, list backups, back up now, download
(the agent uploads the backup to this dev server, which then serves the file), restore
after a confirmation step."""

import os
import re
import secrets
import time

import gevent.pool

from agent.devserver import console_html as html_
from agent.devserver import console_pages as pages
from agent.devserver.console import SECURITY_HEADERS, ConsoleError, html, page_route, redirect
from agent.devserver.console_jobs import call
from agent.devserver.console_views import AGENT, DATABASE, UID_RE, _agent, discover, statuses
from agent.devserver.http import Response, file_chunks

SAFE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
BACKUP_RE = SAFE_FILE          # agent-made backup uids reach 106 characters
UPLOAD_TIMEOUT_S = 3600


def _base(uid):
    return "/console/agents/%s/databases" % uid


def upload_dir(console, uid, backup_uid):
    return os.path.join(console.server.data_dir, "uploads", uid, backup_uid)


def uploaded_file(console, uid, backup_uid):
    """The stored upload of `backup_uid` (path, name), or None."""
    directory = upload_dir(console, uid, backup_uid)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return None
    for name in names:
        if SAFE_FILE.match(name) and not name.endswith(".manifest.json"):
            return os.path.join(directory, name), name
    return None


def databases(console, uid):
    found = {k: v for k, v in discover(console, uid).items() if v["kind"] == "database"}
    rows = statuses(console, uid, found)

    def with_backups(db):
        reply = call(console.server, uid, "database.backup.list",
                     {"service_uid": db["service_uid"]}, 10)
        data = reply.get("data") if isinstance(reply.get("data"), dict) else {}
        backups = [b for b in data.get("backups") or [] if isinstance(b, dict)]
        for backup in backups:
            bid = backup.get("backup_uid")
            backup["uploaded"] = bool(isinstance(bid, str) and BACKUP_RE.match(bid)
                                      and uploaded_file(console, uid, bid))
        return dict(db, backups=backups)
    return gevent.pool.Pool(8).map(with_backups, rows)


@page_route("GET", AGENT + "/databases")
def databases_page(console, req, session):
    uid = _agent(console, req.params["uid"])["server_uid"]
    return html(pages.databases_page(session, uid, databases(console, uid)))


@page_route("POST", AGENT + "/databases")
def database_deploy(console, req, session):
    uid = _agent(console, req.params["uid"])["server_uid"]
    form = req.form
    service_uid = form.get("service_uid", "").strip()
    message = _check_database_form(form, service_uid)
    if message:
        return html(pages.databases_page(session, uid, databases(console, uid), message), 400)
    request = {"service_uid": service_uid, "type": form["type"], "password": form["password"]}
    if form.get("database", "").strip():
        request["database"] = form["database"].strip()
    if form.get("port", "").strip():
        request["port"] = int(form["port"])
    console.jobs.start(uid, "database", "Deploy database %s" % service_uid, "database.deploy",
                       request, 700, service_uid)
    return redirect(_base(uid))


def _check_database_form(form, service_uid):
    if not UID_RE.match(service_uid):
        return "Service uid: letters, digits, '_', '.', '-' (up to 64)."
    if form.get("type") not in pages.DB_TYPES:
        return "Choose an engine."
    if not form.get("password"):
        return "A password is required."
    port = form.get("port", "").strip()
    if port and (not port.isdigit() or not 1 <= int(port) <= 65535):
        return "Host port must be a number from 1 to 65535."
    return ""


@page_route("POST", DATABASE + "/backup")
def backup_now(console, req, session):
    uid, service_uid = _agent(console, req.params["uid"])["server_uid"], req.params["svc"]
    backup_uid = "bk-%d-%s" % (time.time(), secrets.token_hex(3))
    console.jobs.start(uid, "backup", "Back up %s" % service_uid, "database.backup.create",
                       {"service_uid": service_uid, "backup_uid": backup_uid}, 3700, service_uid)
    return redirect(_base(uid))


def _backup_uid(req):
    backup_uid = req.form.get("backup_uid", "")
    if not BACKUP_RE.match(backup_uid):
        raise ConsoleError(400, "backup_uid is not a valid uid")
    return backup_uid


@page_route("POST", DATABASE + "/restore")
def restore(console, req, session):
    uid, service_uid = _agent(console, req.params["uid"])["server_uid"], req.params["svc"]
    backup_uid = _backup_uid(req)
    action = "%s/%s/restore" % (_base(uid), service_uid)
    if req.form.get("confirm") != "yes":
        return html(html_.confirm_page(
            session, "Restore %s" % service_uid,
            "Replace the data of database %s with backup %s? A safety backup is taken first."
            % (service_uid, backup_uid), action, html_.hidden("backup_uid", backup_uid),
            "Restore", _base(uid)))
    console.jobs.start(uid, "restore", "Restore %s from %s" % (service_uid, backup_uid),
                       "database.backup.restore",
                       {"service_uid": service_uid, "backup_uid": backup_uid}, 3700, service_uid)
    return redirect(_base(uid))


@page_route("POST", DATABASE + "/download")
def download(console, req, session):
    """Ask the agent to upload the backup here (waits for it), then hand out the file."""
    uid, service_uid = _agent(console, req.params["uid"])["server_uid"], req.params["svc"]
    backup_uid = _backup_uid(req)
    if uploaded_file(console, uid, backup_uid) is None:
        reply = call(console.server, uid, "database.backup.download",
                     {"service_uid": service_uid, "backup_uid": backup_uid}, UPLOAD_TIMEOUT_S)
        if not reply.get("success"):
            raise ConsoleError(502, "the agent could not upload the backup: %s"
                               % reply.get("error"))
    return redirect("%s/%s/backups/%s/file" % (_base(uid), service_uid, backup_uid))


@page_route("GET", DATABASE + "/backups/(?P<bid>[A-Za-z0-9][A-Za-z0-9_.-]{0,127})/file")
def backup_file(console, req, session):
    uid = _agent(console, req.params["uid"])["server_uid"]
    found = uploaded_file(console, uid, req.params["bid"])
    if found is None:
        raise ConsoleError(404, "this backup was not uploaded to the dev server")
    path, name = found
    return Response(200, content_type="application/octet-stream", stream=file_chunks(path),
                    headers=[("content-length", str(os.path.getsize(path))),
                             ("content-disposition", 'attachment; filename="%s"' % name)]
                    + SECURITY_HEADERS)


