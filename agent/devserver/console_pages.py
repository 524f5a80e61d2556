"""HTML of the agent's console pages: overview with live charts, a service, the deploy form,
one deployment, databases and backups, events. Escaping rules: console_html."""

from agent.devserver.console_html import (agent_state, badge, e, field, fmt_time, form,
                                          hidden, hostname, jobs_table, layout)

LEGEND = '<p class="legend"><span class="in">received</span> <span class="out">sent</span></p>'
DB_TYPES = ("postgresql", "mysql", "mariadb", "redis", "mongodb")
CHARTS = (("cpu", "CPU", ""), ("memory", "Memory", ""), ("disk", "Disk", ""),
          ("network", "Network", "KiB/s"))


def _base(uid):
    return "/console/agents/%s" % uid


def _crumbs(uid):
    return [(_base(uid), uid)]


def agent_page(session, agent, services, jobs):
    uid = agent["server_uid"]
    info = agent.get("hardware_info") if isinstance(agent.get("hardware_info"), dict) else {}
    summary = ('<section class="card facts"><dl>'
               '<dt>State</dt><dd id="agent-state">%s</dd><dt>Host</dt><dd>%s</dd>'
               '<dt>Version</dt><dd>%s</dd><dt>CPU</dt><dd>%s (%s cores)</dd>'
               '<dt>Memory</dt><dd>%s GiB</dd><dt>Connected since</dt><dd>%s</dd>'
               '<dt>Certificate expires</dt><dd>%s</dd></dl>'
               '<p class="actions"><a class="button" href="%s/deploy">Deploy an app</a> '
               '<a class="button" href="%s/databases">Databases</a> '
               '<a class="button" href="%s/events">Events</a></p></section>'
               % (badge(agent_state(agent)), e(hostname(agent) or "-"),
                  e(agent.get("version") or "-"), e(_hw(info, "cpu_model", "cpu", "model")),
                  e(_hw(info, "cpu_count", None, "cpu_logical_count")),
                  e(_hw(info, "ram_gb", None, "total_memory_gb")),
                  e(fmt_time(agent.get("authenticated_at"))), e(fmt_time(agent.get("not_after"))),
                  e(_base(uid)), e(_base(uid)), e(_base(uid))))
    charts = '<section class="charts">%s</section>' % "".join(_chart(*c) for c in CHARTS)
    body = (summary + charts + '<h2>Services</h2>' + services_table(session, uid, services)
            + '<h2>Containers <small>(monitoring samples)</small></h2>'
            '<table id="containers"><thead><tr><th>Container</th><th>State</th><th>CPU %</th>'
            '<th>Memory %</th></tr></thead><tbody><tr><td colspan="4" class="empty">waiting for '
            'a sample...</td></tr></tbody></table><h2>Recent actions</h2>' + jobs_table(jobs))
    return layout(uid, body, session, {"page": "agent", "uid": uid})


def _hw(info, flat, group, key):
    """A hardware fact from the event's flat form or the HardwareInfo form (docs/commands.md)."""
    value = info.get(flat)
    if value is None and group and isinstance(info.get(group), dict):
        value = info[group].get(key)
    if value is None and not group:
        value = info.get(key)
    return "-" if value is None else value


def _chart(metric, title, unit):
    return ('<figure class="chart" data-metric="%s"><figcaption>%s <span class="value" '
            'id="value-%s">-</span> <small>%s</small></figcaption><svg id="chart-%s" '
            'viewBox="0 0 300 100" preserveAspectRatio="none" role="img" aria-label="%s"></svg>'
            '%s</figure>' % (e(metric), e(title), e(metric), e(unit), e(metric), e(title),
                             LEGEND if metric == "network" else ""))


def services_table(session, uid, services):
    if not services:
        return '<p class="empty">No service on this agent yet.</p>'
    rows = "".join(_service_row(session, uid, s) for s in services)
    return ('<table class="services"><thead><tr><th>Service</th><th>Kind</th><th>State</th>'
            '<th>Containers</th><th></th></tr></thead><tbody>%s</tbody></table>' % rows)


def lifecycle_forms(session, uid, service_uid):
    base = "%s/services/%s/" % (_base(uid), service_uid)
    return " ".join(form(base + action, session, action.capitalize(), button_cls="small")
                    for action in ("start", "stop", "restart"))


def _service_row(session, uid, svc):
    containers = ", ".join("%s %s" % (e(c.get("name")), badge(c.get("status") or "-"))
                           for c in svc.get("containers") or [])
    return ('<tr data-service="%s"><td><a href="%s/services/%s">%s</a></td><td>%s</td>'
            '<td class="service-state">%s</td><td>%s</td><td>%s</td></tr>'
            % (e(svc["service_uid"]), e(_base(uid)), e(svc["service_uid"]), e(svc["service_uid"]),
               e(svc.get("kind")), badge(svc.get("status") or "-"), containers or "-",
               lifecycle_forms(session, uid, svc["service_uid"])))


def service_page(session, uid, svc, deployments):
    service_uid = svc["service_uid"]
    rows = "".join('<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>'
                   % (e(c.get("name")), badge(c.get("status") or "-"), e(c.get("health") or "-"),
                      e(c.get("version") or "-"), e(c.get("image") or "-"),
                      e((c.get("commit_sha") or "-")[:12])) for c in svc.get("containers") or [])
    body = ('<section class="card facts"><dl><dt>State</dt><dd class="service-state" '
            'data-service="%s">%s</dd><dt>Health</dt><dd>%s</dd><dt>Error</dt><dd>%s</dd></dl>'
            '<p class="actions">%s</p></section><h2>Containers</h2><table><thead><tr><th>Name</th>'
            '<th>State</th><th>Health</th><th>Version</th><th>Image</th><th>Commit</th></tr>'
            '</thead><tbody>%s</tbody></table><h2>Deployments</h2>%s<h2>Live logs</h2>'
            '<pre id="service-logs" class="log" aria-live="polite"></pre>'
            % (e(service_uid), badge(svc.get("status") or "-"), e(svc.get("health") or "-"),
               e(svc.get("error") or "-"), lifecycle_forms(session, uid, service_uid),
               rows or '<tr><td colspan="6" class="empty">no container</td></tr>',
               _deployments_table(session, uid, service_uid, deployments)))
    return layout(service_uid, body, session,
                  {"page": "service", "uid": uid, "service": service_uid}, _crumbs(uid))


def _deployments_table(session, uid, service_uid, deployments):
    if not deployments:
        return '<p class="empty">No deployment seen by this dev server.</p>'
    rows = []
    for dep in deployments:
        rollback = ""
        if dep.get("status") == "completed":
            rollback = form("%s/services/%s/rollback" % (_base(uid), service_uid), session,
                            "Roll back to this", hidden("deployment_uid", dep["deployment_uid"]),
                            button_cls="small")
        rows.append('<tr><td><a href="%s/deployments/%s">%s</a></td><td>%s</td><td>%s</td>'
                    '<td>%s</td><td>%s</td><td>%s</td></tr>'
                    % (e(_base(uid)), e(dep["deployment_uid"]), e(dep["deployment_uid"]),
                       badge(dep.get("status") or "-"), e((dep.get("commit_sha") or "-")[:12]),
                       e(dep.get("image") or "-"), e(fmt_time(dep.get("timestamp"))), rollback))
    return ('<table id="deployments"><thead><tr><th>Deployment</th><th>Status</th><th>Commit</th>'
            '<th>Image</th>'
            '<th>When</th><th></th></tr></thead><tbody>%s</tbody></table>' % "".join(rows))


def deploy_page(session, uid, values, message=""):
    v = values.get
    note = '<p class="error" role="alert">%s</p>' % e(message) if message else ""
    fields = (field("Service uid", "service_uid", v("service_uid", ""), required=True,
                    placeholder="my-app")
              + field("Git URL", "git_url", v("git_url", ""), required=True,
                      placeholder="https://git.example.com/owner/repo.git")
              + field("Access token (optional)", "access_token", "", "password")
              + field("Branch", "branch", v("branch", "main"))
              + field("Commit (optional)", "commit", v("commit", ""), placeholder="full or short SHA")
              + field("Container port", "port", v("port", "8080"), "number")
              + field("Domain (optional)", "domain", v("domain", ""), placeholder="app.example.com")
              + '<label>Environment (KEY=value, one per line)<textarea name="env" rows="4">%s'
                '</textarea></label>' % e(v("env", "")))
    body = note + '<section class="card">%s</section>' % form(
        "%s/deploy" % _base(uid), session, "Deploy", fields, cls="stacked", button_cls="primary")
    return layout("Deploy an app", body, session, {"page": "deploy", "uid": uid}, _crumbs(uid))


def deployment_page(session, uid, deployment_uid, service_uid):
    body = ('<section class="card facts"><dl><dt>Service</dt><dd>%s</dd><dt>Status</dt>'
            '<dd id="deploy-status">%s</dd><dt>Phase</dt><dd id="deploy-phase">-</dd>'
            '<dt>Message</dt><dd id="deploy-message">-</dd></dl></section>'
            '<h2>Steps</h2><ol id="deploy-steps" class="steps"></ol>'
            '<h2>Log</h2><pre id="deploy-log" class="log" aria-live="polite"></pre>'
            % (('<a href="%s/services/%s">%s</a>' % (e(_base(uid)), e(service_uid), e(service_uid)))
               if service_uid else "-", badge("waiting")))
    return layout("Deployment %s" % deployment_uid, body, session,
                  {"page": "deployment", "uid": uid, "deployment": deployment_uid}, _crumbs(uid))


def databases_page(session, uid, databases, message=""):
    note = '<p class="error" role="alert">%s</p>' % e(message) if message else ""
    types = "".join('<option value="%s">%s</option>' % (e(t), e(t)) for t in DB_TYPES)
    fields = (field("Service uid", "service_uid", required=True, placeholder="my-db")
              + '<label>Engine<select name="type">%s</select></label>' % types
              + field("Password", "password", kind="password", required=True)
              + field("Database (optional)", "database") + field("Host port (optional)", "port",
                                                                 kind="number"))
    deploy = '<section class="card"><h2>Deploy a database</h2>%s</section>' % form(
        "%s/databases" % _base(uid), session, "Deploy database", fields, cls="stacked",
        button_cls="primary")
    cards = "".join(_database_card(session, uid, db) for db in databases)
    body = note + deploy + (cards or '<p class="empty">No database on this agent yet.</p>')
    return layout("Databases", body, session, {"page": "databases", "uid": uid}, _crumbs(uid))


def _database_card(session, uid, db):
    base = "%s/databases/%s" % (_base(uid), db["service_uid"])
    rows = "".join(_backup_row(session, uid, base, db, b) for b in db.get("backups") or [])
    return ('<section class="card database" data-service="%s"><h2>%s <small>%s</small> %s</h2>'
            '<p class="actions">%s</p>%s<table><thead><tr><th>Backup</th><th>Created</th>'
            '<th>Size</th><th>SHA-256</th><th></th></tr></thead><tbody>%s</tbody></table></section>'
            % (e(db["service_uid"]), e(db["service_uid"]), e(db.get("type") or ""),
               badge(db.get("status") or "-"), form(base + "/backup", session, "Back up now"),
               '<p class="error">%s</p>' % e(db["error"]) if db.get("error") else "",
               rows or '<tr><td colspan="5" class="empty">no backup</td></tr>'))


def _backup_row(session, uid, base, db, backup):
    bid = backup.get("backup_uid")
    actions = ""
    if bid and not backup.get("legacy"):
        actions = form(base + "/restore", session, "Restore", hidden("backup_uid", bid),
                       button_cls="danger small")
        if backup.get("uploaded"):
            actions += ' <a class="button small" href="%s/backups/%s/file">Download</a>' % (
                e(base), e(bid))
        else:
            actions += " " + form(base + "/download", session, "Download",
                                  hidden("backup_uid", bid), button_cls="small")
    return ('<tr><td>%s</td><td>%s</td><td>%s</td><td><code>%s</code></td><td>%s</td></tr>'
            % (e(backup.get("file_name")), e(fmt_time(backup.get("created_at"))),
               e(backup.get("compressed_size") or "-"), e((backup.get("sha256") or "-")[:16]),
               actions))


def events_page(session, uid):
    body = ('<section class="card filters"><label>Filter by name or content <input type="search" '
            'id="event-filter" placeholder="e.g. update_deployment_status"></label> '
            '<label><input type="checkbox" id="event-pause"> Pause</label></section>'
            '<table id="events"><thead><tr><th>Time (UTC)</th><th>Event</th><th>Data</th></tr>'
            '</thead><tbody></tbody></table>')
    return layout("Events", body, session, {"page": "events", "uid": uid}, _crumbs(uid))
