"""The demo's second step (agent/devserver/demo.py ``show``): serve the sample repository,
drive the agent through the devserver's call API, print what a person can open."""

import json
import os
import secrets
import subprocess
import sys
import time

import gevent
import requests
from gevent.pywsgi import WSGIServer

from agent.devserver.demo import APP_UID, DB_UID, DOMAIN, GIT_ENV, say
from agent.devserver.http import parse_cgi_output

# git smart HTTP, fetch only: git-http-backend(1) with its two read endpoints
_READ_PATHS = ("/info/refs", "/git-upload-pack", "/HEAD")


def git_http_app(project_root):
    """A WSGI app around ``git http-backend`` (CGI) that serves fetches and refuses pushes."""
    def app(environ, start_response):
        path, query = environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")
        if not path.endswith(_READ_PATHS) or "receive-pack" in query or ".." in path:
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"read-only demo repository\n"]
        body = environ["wsgi.input"].read()
        env = dict(GIT_ENV, GIT_PROJECT_ROOT=project_root, GIT_HTTP_EXPORT_ALL="1", GATEWAY_INTERFACE="CGI/1.1",
                   REQUEST_METHOD=environ["REQUEST_METHOD"], PATH_INFO=path, QUERY_STRING=query,
                   CONTENT_TYPE=environ.get("CONTENT_TYPE", ""), CONTENT_LENGTH=str(len(body)),
                   REMOTE_ADDR=environ.get("REMOTE_ADDR", ""),
                   HTTP_CONTENT_ENCODING=environ.get("HTTP_CONTENT_ENCODING", ""),
                   HTTP_GIT_PROTOCOL=environ.get("HTTP_GIT_PROTOCOL", ""))
        done = subprocess.run(["git", "http-backend"], input=body, capture_output=True, env=env, timeout=120)
        status, headers, payload = parse_cgi_output(done.stdout)
        start_response(status, headers)
        return [payload]
    return app


def progress_line(name, data):
    """One line for a progress event of a deploy, a database or a backup; None for others."""
    if name == "update_deployment_status":
        return f"deploy {data.get('status')}: {data.get('phase', '')} {data.get('message', '')}".rstrip()
    if name == "update_service_status":
        return f"{data.get('service_uid')}: {data.get('status')} {data.get('message', '')}".rstrip()
    if name == "backup_progress_update":
        return f"backup {data.get('percent')}%: {data.get('message', '')}"
    if name == "domain_status_update":
        return f"domain {data.get('domain')}: certificate {data.get('ssl_status')}, upstream {data.get('upstream_container')}"
    return None


class ControlPlane:
    """The devserver's admin API (docs/devserver.md): calls and the event stream."""

    def __init__(self, data_dir, listen):
        host, _, port = listen.rpartition(":")
        self.base = f"https://{'127.0.0.1' if host in ('', '0.0.0.0') else host}:{port}"
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = os.path.join(data_dir, "ca.crt")
        with open(os.path.join(data_dir, "admin.token")) as handle:
            self.session.headers["Authorization"] = "Bearer " + handle.read().strip()

    def call(self, uid, event, data, timeout=600):
        """The agent's reply ({success, data, error, code})."""
        body = {"event": event, "data": data, "timeout_s": timeout}
        response = self.session.post(f"{self.base}/api/agents/{uid}/calls", json=body, timeout=timeout + 30)
        response.raise_for_status()
        return response.json()

    def events(self, uid):
        """(event name, data) from the agent's event stream, until the connection ends."""
        response = self.session.get(f"{self.base}/api/agents/{uid}/events", stream=True, timeout=(10, None))
        name = None
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: ") and name:
                frame = json.loads(line[len("data: "):])
                yield name, frame.get("data", frame) if isinstance(frame, dict) else frame


class Show:
    def __init__(self, state, devserver_dir, listen, uid):
        self.state, self.listen, self.uid = state, listen, uid
        self.control = ControlPlane(devserver_dir, listen)
        self.git_server = None
        self.watcher = None

    def start_git(self):
        self.git_server = WSGIServer(("127.0.0.1", self.state["git_port"]), git_http_app(self.state["git_root"]),
                                     log=None, error_log=sys.stderr)
        self.git_server.start()

    def stop(self):
        if self.watcher is not None:
            self.watcher.kill(block=False)
        if self.git_server is not None:
            self.git_server.stop(timeout=1)

    def run(self):
        """Every step in order; False (after saying why) when one fails."""
        self.watcher = gevent.spawn(self._print_progress)
        gevent.sleep(0.2)               # subscribed before the deploy starts
        steps = [self.deploy_app, self.add_domain, self.wait_for_app]
        steps += [self.deploy_database, self.back_up] if self.state["images"].get("postgres") else []
        for step in steps:
            if not step():
                return False
        self.summary()
        return True

    def _call(self, what, event, data, timeout=600):
        say(f"\n==> {what}")
        reply = self.control.call(self.uid, event, data, timeout)
        if not reply.get("success"):
            say(f"{event} failed: {reply.get('code')}: {reply.get('error')}")
        return reply

    def deploy_app(self):
        data = {"service_uid": APP_UID, "deployment_uid": f"demo-dep-{int(time.time())}",
                "github_repo": f"http://127.0.0.1:{self.state['git_port']}/sample.git", "github_branch": "main",
                "commit_sha": self.state["commit_sha"], "internal_port": 8080, "health_timeout_seconds": 60,
                "env_vars": {"GREETING": "hello"}}
        reply = self._call(f"service.app.deploy from {data['github_repo']} (commit {data['commit_sha'][:8]})",
                           "service.app.deploy", data)
        if reply.get("success"):
            say(f"deployed: {json.dumps(reply.get('data'))[:300]}")
        return reply.get("success")

    def add_domain(self):
        data = {"action": "add", "service_uid": APP_UID, "domain": DOMAIN, "port": 8080, "force_https": False}
        return self._call(f"service.domain.manage: route {DOMAIN} through Caddy", "service.domain.manage",
                          data).get("success")

    def wait_for_app(self):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                answer = requests.get(f"http://127.0.0.1:{self.state['http_port']}/", headers={"Host": DOMAIN},
                                      timeout=5, proxies={"http": None, "https": None})
                if answer.status_code == 200 and "PulseUp" in answer.text:
                    say(f"Caddy serves the app for {DOMAIN} (HTTP {answer.status_code})")
                    return True
            except requests.RequestException:
                pass
            gevent.sleep(0.5)
        say(f"the app did not answer through Caddy on port {self.state['http_port']} within 60 s")
        return False

    def deploy_database(self):
        self.password = secrets.token_urlsafe(18)
        data = {"service_uid": DB_UID, "type": "postgresql", "password": self.password, "database": "demo"}
        reply = self._call("database.deploy: PostgreSQL", "database.deploy", data)
        if reply.get("success"):
            say(f"database: {json.dumps(reply.get('data'))[:300]}")
        return reply.get("success")

    def back_up(self):
        backup_uid = f"demo-backup-{int(time.time())}"
        reply = self._call("database.backup.create", "database.backup.create",
                           {"service_uid": DB_UID, "backup_uid": backup_uid})
        if not reply.get("success"):
            return False
        self.backup = reply.get("data") or {}
        say(f"backup: {json.dumps(self.backup)[:400]}")
        return True

    def _print_progress(self):
        """The agent's progress events as they arrive on the devserver's event stream."""
        try:
            for name, data in self.control.events(self.uid):
                line = progress_line(name, data) if isinstance(data, dict) else None
                if line:
                    say(f"  | {line}")
        except (requests.RequestException, ValueError):
            pass    # the stream ends with the devserver; the demo goes on without live lines

    def summary(self):
        host, _, port = self.listen.rpartition(":")
        port_http = self.state["http_port"]
        images = ", ".join(tag for tag in self.state["images"].values() if tag)
        lines = ["", "The agent deployed the sample app behind its Caddy"
                 + (" and a PostgreSQL database, and backed the database up." if hasattr(self, "backup") else "."),
                 f"  App:      http://{DOMAIN}:{port_http}/",
                 f"            (or: curl -H 'Host: {DOMAIN}' http://127.0.0.1:{port_http}/)",
                 f"  Console:  https://{host or '127.0.0.1'}:{port}/  (log in with the devserver's admin token)"]
        if hasattr(self, "backup"):
            lines.append(f"  Backup:   {self.backup.get('backup_path') or self.backup.get('file_path') or self.backup}")
        lines += [f"  Images:   {images}, built from this host's files (no registry is used)",
                  "The demo's git server keeps serving the sample repository. Stop with Ctrl-C.", ""]
        print("\n".join(lines), flush=True)
