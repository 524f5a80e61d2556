"""HTML of the console: the layout, forms, and the login, message, agents and confirmation
pages. Every value that reaches the page goes through `e()` (html.escape, quotes too):
agent-provided strings are hostile. Scripts come only from /console/static (the CSP
forbids inline script), and page data reaches them through escaped data-* attributes.
"""

import datetime
import html
import time


def e(value):
    return html.escape("" if value is None else str(value), quote=True)


def fmt_time(ts):
    """Unix seconds or an RFC 3339 string -> 'YYYY-MM-DD HH:MM:SS UTC' ('-' if unknown)."""
    if ts in (None, ""):
        return "-"
    if isinstance(ts, str):
        try:
            ts = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return ts
    try:
        moment = datetime.datetime.fromtimestamp(float(ts), datetime.timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return "-"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(ts):
    if not isinstance(ts, (int, float)):
        return ""
    delta = max(0, int(time.time() - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if delta >= size:
            return "%d %s ago" % (delta // size, unit)
    return "%d s ago" % delta


def badge(text, kind=None):
    return '<span class="badge %s">%s</span>' % (e(kind or _badge_kind(text)), e(text))


def _badge_kind(text):
    text = str(text).lower()
    if text in ("running", "connected", "succeeded", "completed", "healthy", "active", "ok",
                "success"):
        return "good"
    if text in ("failed", "revoked", "dead", "unhealthy", "error", "cancelled", "expired"):
        return "bad"
    if text in ("stopped", "disconnected", "exited", "none", "-"):
        return "idle"
    return "busy"


def hidden(name, value):
    return '<input type="hidden" name="%s" value="%s">' % (e(name), e(value))


def form(action, session, button, fields="", cls="inline", button_cls=""):
    """A POST form with the session's CSRF token; `fields` is already-escaped HTML."""
    return ('<form method="post" action="%s" class="%s">%s%s<button type="submit" class="%s">'
            '%s</button></form>' % (e(action), e(cls), hidden("csrf", session.csrf), fields,
                                    e(button_cls), e(button)))


def field(label, name, value="", kind="text", placeholder="", required=False, extra=""):
    return ('<label>%s<input type="%s" name="%s" value="%s" placeholder="%s"%s%s></label>'
            % (e(label), e(kind), e(name), e(value), e(placeholder),
               " required" if required else "", extra))


def layout(title, body, session=None, data=None, crumbs=()):
    """The whole page. `data`: attributes for <body> (data-*), read by console.js."""
    attrs = "".join(' data-%s="%s"' % (e(k), e(v)) for k, v in (data or {}).items())
    nav = ""
    if session is not None:
        links = ['<a href="/">Agents</a>'] + ['<a href="%s">%s</a>' % (e(href), e(text))
                                            for href, text in crumbs]
        nav = ('<nav>%s</nav>%s' % (" / ".join(links),
                                   form("/console/logout", session, "Log out", cls="logout")))
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<title>%s - PulseUp dev console</title>'
            '<link rel="stylesheet" href="/console/static/console.css">'
            '<script src="/console/static/console.js" defer></script></head>'
            '<body%s><header><a class="brand" href="/">PulseUp <b>dev console</b></a>%s</header>'
            '<main><h1>%s</h1>%s</main></body></html>'
            % (e(title), attrs, nav, e(title), body))


def login_page(csrf, message=""):
    note = '<p class="error" role="alert">%s</p>' % e(message) if message else ""
    body = ('<section class="card login">%s<form method="post" action="/console/login">%s'
            '<label>Admin token<input type="password" name="token" autocomplete="current-password"'
            ' autofocus required></label><button type="submit">Log in</button></form>'
            '<p class="hint">The token is in <code>admin.token</code> in the dev server\'s data '
            'directory.</p></section>' % (note, hidden("csrf", csrf)))
    return layout("Log in", body, data={"page": "login"})


def message_page(message, status):
    body = '<section class="card"><p class="error">%s</p><p><a href="/">Back</a></p></section>' \
        % e(message)
    return layout("Error %d" % status, body)


def confirm_page(session, title, question, action, fields, button, back):
    """A confirmation step for a destructive action: the same form again with confirm=yes."""
    body = ('<section class="card confirm"><p>%s</p>%s <a class="button" href="%s">Cancel</a>'
            '</section>' % (e(question), form(action, session, button,
                                              fields + hidden("confirm", "yes"),
                                              button_cls="danger"), e(back)))
    return layout(title, body, session)


def agents_page(session, agents):
    rows = "".join(_agent_row(session, a) for a in agents)
    if not rows:
        rows = ('<tr><td colspan="7" class="empty">No agent enrolled yet. Start one with the '
                'join token the dev server printed.</td></tr>')
    body = ('<table class="agents"><thead><tr><th>Agent</th><th>State</th><th>Host</th>'
            '<th>Version</th><th>Last seen</th><th>Certificate expires</th><th></th></tr>'
            '</thead><tbody>%s</tbody></table>' % rows)
    return layout("Agents", body, session, data={"page": "agents"})


def agent_state(agent):
    if agent.get("revoked"):
        return "revoked"
    return "connected" if agent.get("connected") else "disconnected"


def hostname(agent):
    info = agent.get("hardware_info")
    return info.get("hostname") if isinstance(info, dict) else None


def _agent_row(session, agent):
    uid = agent["server_uid"]
    seen = "now" if agent.get("connected") else ago(agent.get("last_seen"))
    revoke = "" if agent.get("revoked") else form(
        "/console/agents/%s/revoke" % uid, session, "Revoke", button_cls="danger small")
    return ('<tr data-agent="%s"><td><a href="/console/agents/%s">%s</a></td><td>%s</td>'
            '<td>%s</td><td>%s</td><td title="%s">%s</td><td>%s</td><td>%s</td></tr>'
            % (e(uid), e(uid), e(uid), badge(agent_state(agent)), e(hostname(agent) or "-"),
               e(agent.get("version") or "-"), e(fmt_time(agent.get("last_seen"))),
               e(seen or "-"), e(fmt_time(agent.get("not_after"))), revoke))


def jobs_table(jobs):
    if not jobs:
        return '<p class="empty">Nothing asked of this agent from the console yet.</p>'
    rows = "".join(
        '<tr data-job="%d"><td>%s</td><td class="job-state">%s</td><td>%s</td><td>%s</td></tr>'
        % (j.id, _job_link(j), badge(j.state), e(fmt_time(j.started_at)), e(j.error))
        for j in jobs[:20])
    return ('<table class="jobs"><thead><tr><th>Action</th><th>State</th><th>Started</th>'
            '<th>Error</th></tr></thead><tbody>%s</tbody></table>' % rows)


def _job_link(job):
    if job.deployment_uid:
        return '<a href="/console/agents/%s/deployments/%s">%s</a>' % (
            e(job.uid), e(job.deployment_uid), e(job.title))
    return e(job.title)
