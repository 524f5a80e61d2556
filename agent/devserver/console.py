"""The web console of the dev server (docs/devserver.md, "Web console").

Served on the same HTTPS port as the API: `/` and `/console/...`. Everything but the login
form and the static files needs a session: `POST /console/login` with the admin token sets
a random session id in a cookie (HttpOnly, Secure, SameSite=Strict); the admin token itself
never leaves the server. Every form carries a CSRF token bound to the session (before
login: to a login cookie), compared in constant time. Pages are rendered on the server with
every value escaped (console_html); agent data is hostile.
"""

import hmac
import logging
import os
import re
import secrets
import time
import urllib.parse

from agent.devserver import console_html as page
from agent.devserver.console_jobs import Jobs
from agent.devserver.console_stream import LogFollowers
from agent.devserver.http import HttpError, Response, match_route

log = logging.getLogger(__name__)

SESSION_COOKIE = "pulseup_console"
LOGIN_COOKIE = "pulseup_login"
SESSION_TTL_S = 12 * 3600
MAX_SESSIONS = 1000
MAX_FORM_BYTES = 256 * 1024
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "console")
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
SECURITY_HEADERS = [
    ("content-security-policy", "default-src 'none'; script-src 'self'; style-src 'self'; "
     "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
     "frame-ancestors 'none'"),
    ("x-content-type-options", "nosniff"), ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"), ("cache-control", "no-store")]

PAGES = []


def page_route(method, pattern, login=True):
    """Register a console handler `fn(console, req, session)`; `login=False`: open."""
    def register(fn):
        PAGES.append((method, re.compile("^" + pattern + "$"), login, fn))
        return fn
    return register


class ConsoleError(Exception):
    """A refused console request: answered with an HTML page and `status`."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def is_console_path(path):
    return path == "/" or path.startswith("/console/")


def html(body, status=200, headers=()):
    return Response(status, body.encode(), content_type="text/html; charset=utf-8",
                    headers=SECURITY_HEADERS + list(headers))


def redirect(location, headers=()):
    return Response(303, b"", content_type="text/plain",
                    headers=[("location", location)] + SECURITY_HEADERS + list(headers))


def cookie(name, value, max_age=None):
    parts = ["%s=%s" % (name, value), "Path=/", "HttpOnly", "Secure", "SameSite=Strict"]
    if max_age is not None:
        parts.append("Max-Age=%d" % max_age)
    return ("set-cookie", "; ".join(parts))


def read_cookies(req):
    cookies = {}
    for part in req.headers.get("cookie", "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name not in cookies:
            cookies[name] = value
    return cookies


def same(a, b):
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


class Session:
    def __init__(self):
        self.id = secrets.token_urlsafe(32)
        self.csrf = secrets.token_urlsafe(32)
        self.expires = time.time() + SESSION_TTL_S


class Console:
    def __init__(self, server):
        self.server = server
        self.sessions = {}
        self.jobs = Jobs(server)
        self.log_followers = LogFollowers(server, self.jobs)

    def close(self):
        self.jobs.close()

    # Dispatch ----------------------------------------------------------------------------

    def handle(self, req):
        try:
            return self._dispatch(req)
        except ConsoleError as e:
            return html(page.message_page(e.message, e.status), e.status)

    def _dispatch(self, req):
        try:
            method, _pattern, login, fn = match_route(PAGES, req)
        except HttpError as e:
            raise ConsoleError(e.status, "page not found" if e.status == 404 else e.message) \
                from e
        session = self.session_of(req)
        if login and session is None:
            return self._login_required(req)
        if method == "POST" and fn is not login_submit:
            req.form = self.read_form(req)
            self.check_csrf(req.form, session)
        return fn(self, req, session)

    def _login_required(self, req):
        if req.method == "GET" and req.path == "/":
            return self.login_page()
        raise ConsoleError(401, "log in first")

    # Sessions and CSRF -------------------------------------------------------------------

    def session_of(self, req):
        sid = read_cookies(req).get(SESSION_COOKIE)
        session = self.sessions.get(sid) if sid else None
        if session is not None and session.expires < time.time():
            del self.sessions[sid]
            return None
        return session

    def new_session(self):
        now = time.time()
        for sid in [s for s, v in self.sessions.items() if v.expires < now]:
            del self.sessions[sid]
        while len(self.sessions) >= MAX_SESSIONS:
            oldest = min(self.sessions.values(), key=lambda s: s.expires)
            del self.sessions[oldest.id]
        session = Session()
        self.sessions[session.id] = session
        return session

    @staticmethod
    def read_form(req):
        ctype = req.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return {}                   # no form: no CSRF token, refused by the caller
        body = req.read_body(MAX_FORM_BYTES).decode("utf-8", "replace")
        return dict(urllib.parse.parse_qsl(body, keep_blank_values=True))

    @staticmethod
    def check_csrf(form, session):
        if session is None or not same(form.get("csrf"), session.csrf):
            raise ConsoleError(403, "invalid or missing CSRF token: reload the page")

    def login_page(self, message="", status=200):
        token = secrets.token_urlsafe(32)
        return html(page.login_page(token, message), status,
                    [cookie(LOGIN_COOKIE, token, 600)])


# Login and logout ------------------------------------------------------------------------

@page_route("POST", "/console/login", login=False)
def login_submit(console, req, session):
    form = console.read_form(req)
    if not same(form.get("csrf"), read_cookies(req).get(LOGIN_COOKIE)):
        return console.login_page("The form expired: try again.", 403)
    if not same(form.get("token", "").strip(), console.server.admin_token):
        log.info("console login refused")
        return console.login_page("Wrong admin token.", 401)
    session = console.new_session()
    return redirect("/", [cookie(SESSION_COOKIE, session.id), cookie(LOGIN_COOKIE, "", 0)])


@page_route("POST", "/console/logout")
def logout(console, req, session):
    console.sessions.pop(session.id, None)
    return redirect("/", [cookie(SESSION_COOKIE, "", 0)])


@page_route("GET", "/console/static/(?P<name>[a-z]+\\.(js|css))", login=False)
def static(console, req, session):
    name = req.params["name"]
    path = os.path.join(STATIC_DIR, name)
    try:
        with open(path, "rb") as f:
            body = f.read()
    except OSError as e:
        raise ConsoleError(404, "no such file") from e
    ctype = STATIC_TYPES[os.path.splitext(name)[1]]
    return Response(200, body, content_type=ctype, headers=SECURITY_HEADERS)


# The pages register themselves on import.
from agent.devserver import console_views  # noqa: E402,F401
