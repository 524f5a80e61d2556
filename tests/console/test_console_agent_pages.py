"""Console pages that talk to an agent, against a hand-written agent (tests/devserver's
TestAgent) that records the calls it gets: the live stats stream, lifecycle actions,
databases and backups, and a deploy whose log stream must be started and restarted."""

import json
import os

import gevent
import pytest

from tests.console.conftest import CSRF


class FakeAgent:
    """Answers calls from `replies` (event -> reply or callable) and records them."""

    def __init__(self, agent, devserver):
        self.agent, self.devserver = agent, devserver
        self.uid = agent.identity.server_uid
        self.calls = []
        self.replies = {}
        self._loop = gevent.spawn(self._serve)

    def _serve(self):
        while True:
            try:
                frame = self.agent.recv()
            except Exception:  # noqa: BLE001 - the connection closed: the fake ends
                return
            if frame.get("type") == "call":
                self.calls.append((frame["event"], frame["data"]))
                gevent.spawn(self._answer, frame)

    def _answer(self, frame):
        reply = self.replies.get(frame["event"], {"success": False, "error": "not faked"})
        if callable(reply):
            reply = reply(frame["data"])
        self.agent.send({"type": "response", "call_id": frame["call_id"], "data": reply})

    def event(self, name, data):
        self.agent.send({"type": "event", "event": name, "data": data})

    def wait_call(self, event, timeout=10):
        with gevent.Timeout(timeout, AssertionError("no %s call" % event)):
            while True:
                found = [data for name, data in self.calls if name == event]
                if found:
                    return found
                gevent.sleep(0.02)

    def stop(self):
        self._loop.kill()


@pytest.fixture
def fake(hostile_agent, devserver):
    fake = FakeAgent(hostile_agent, devserver)
    yield fake
    fake.stop()


def _ok(data):
    return {"success": True, "data": data, "error": "", "code": ""}


DB_LABELS = {"pulseup.service_uid": "db-one", "pulseup.database_type": "postgresql"}
BACKUPS = [{"backup_uid": "bk-1", "file_name": "backup_1.dump.zst", "compressed_size": 5,
            "sha256": "ab" * 32, "created_at": "2026-01-01T00:00:00Z"},
           {"backup_uid": "bk-2", "file_name": "backup_2.dump.zst", "compressed_size": 7}]


def _database_replies(fake):
    fake.replies.update({
        "monitoring.container.metrics": _ok({"c1": {"container_name": "pulseup-db-db-one",
                                                    "status": "running", "labels": DB_LABELS}}),
        "service.status.get": _ok({"status": "running", "containers": []}),
        "database.backup.list": _ok({"backups": BACKUPS, "count": 2}),
        "database.backup.create": _ok({}), "database.backup.restore": _ok({}),
        "database.deploy": _ok({})})


def test_stats_stream_pushes_host_stats_and_frames(logged_in, fake, devserver):
    fake.replies["server.stats.live"] = _ok({"cpu_percent": 12.5, "memory_usage_percent": 40})
    fake.replies["monitoring.container.metrics"] = _ok({})
    resp = logged_in.http.get(devserver.url + "/console/agents/%s/stream" % fake.uid,
                              stream=True, timeout=30)
    assert resp.headers["content-type"] == "text/event-stream"
    lines = resp.iter_lines(decode_unicode=True)
    seen = {}
    with gevent.Timeout(20):
        for line in lines:
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                seen.setdefault(name, []).append(json.loads(line[6:]))
                if name == "stats" and len(seen["stats"]) == 1:
                    fake.event("update_service_status", {"service_uid": "a", "status": "running"})
                if "frame" in seen and len(seen["stats"]) >= 2:
                    break
    resp.close()
    assert seen["stats"][0]["cpu_percent"] == 12.5
    assert seen["frame"][0]["name"] == "update_service_status"


def test_lifecycle_buttons_start_jobs(logged_in, fake):
    fake.replies["service.restart"] = _ok({"message": "restarted"})
    csrf = logged_in.csrf("/")
    resp = logged_in.post("/console/agents/%s/services/web/restart" % fake.uid, {"csrf": csrf})
    assert resp.status_code == 303
    assert fake.wait_call("service.restart") == [{"service_uid": "web"}]
    assert logged_in.post("/console/agents/%s/services/web/explode" % fake.uid,
                          {"csrf": csrf}).status_code == 404


def test_databases_page_lists_backups_and_acts(logged_in, fake, devserver):
    _database_replies(fake)
    base = "/console/agents/%s/databases" % fake.uid
    page = logged_in.get(base)
    assert page.status_code == 200
    assert "db-one" in page.text and "backup_1.dump.zst" in page.text
    csrf = CSRF.search(page.text).group(1)
    assert logged_in.post(base + "/db-one/backup", {"csrf": csrf}).status_code == 303
    created = fake.wait_call("database.backup.create")[0]
    assert created["service_uid"] == "db-one" and created["backup_uid"].startswith("bk-")

    ask = logged_in.post(base + "/db-one/restore", {"csrf": csrf, "backup_uid": "bk-1"})
    assert ask.status_code == 200 and 'name="confirm" value="yes"' in ask.text
    gevent.sleep(0.3)
    assert not [c for c in fake.calls if c[0] == "database.backup.restore"]
    done = logged_in.post(base + "/db-one/restore",
                          {"csrf": csrf, "backup_uid": "bk-1", "confirm": "yes"})
    assert done.status_code == 303
    assert fake.wait_call("database.backup.restore") == [{"service_uid": "db-one",
                                                          "backup_uid": "bk-1"}]


def test_database_deploy_form(logged_in, fake):
    _database_replies(fake)
    base = "/console/agents/%s/databases" % fake.uid
    csrf = logged_in.csrf(base)
    bad = logged_in.post(base, {"csrf": csrf, "service_uid": "db two", "type": "postgresql",
                                "password": "pw"})
    assert bad.status_code == 400 and "Service uid" in bad.text
    good = logged_in.post(base, {"csrf": csrf, "service_uid": "db-two", "type": "postgresql",
                                 "password": "S3cret-pw", "port": "15432"})
    assert good.status_code == 303
    assert fake.wait_call("database.deploy") == [{"service_uid": "db-two", "type": "postgresql",
                                                  "password": "S3cret-pw", "port": 15432}]
    assert "S3cret-pw" not in logged_in.get("/console/agents/%s" % fake.uid).text


def test_download_asks_for_the_upload_then_serves_the_file(logged_in, fake, devserver):
    _database_replies(fake)

    def upload(data):           # what the agent's upload leaves in the data directory
        directory = os.path.join(devserver.data_dir, "uploads", fake.uid, data["backup_uid"])
        os.makedirs(directory)
        with open(os.path.join(directory, "backup_2.dump.zst"), "wb") as f:
            f.write(b"dump-bytes")
        return _ok({"bytes_sent": 10})
    fake.replies["database.backup.download"] = upload
    base = "/console/agents/%s/databases" % fake.uid
    csrf = logged_in.csrf(base)
    resp = logged_in.post(base + "/db-one/download", {"csrf": csrf, "backup_uid": "bk-2"})
    assert resp.status_code == 303
    assert fake.wait_call("database.backup.download") == [{"service_uid": "db-one",
                                                           "backup_uid": "bk-2"}]
    got = logged_in.get(resp.headers["location"])
    assert got.status_code == 200 and got.content == b"dump-bytes"
    assert got.headers["content-disposition"] == 'attachment; filename="backup_2.dump.zst"'
    assert logged_in.get(base + "/db-one/backups/bk-9/file").status_code == 404
    assert "Download" in logged_in.get(base).text


def _deploy_with_a_stream_that_ends_early(fake, starts):
    """A fake `service.app.deploy`: runs, sends a log chunk and a final chunk (the stream
    ended while the deploy still runs), more progress, then completes."""
    def wait_starts(count):
        with gevent.Timeout(10):
            while len(starts) < count:
                gevent.sleep(0.02)

    def deploy(data):
        dep, status = data["deployment_uid"], "update_deployment_status"
        progress = {"deployment_uid": dep, "service_uid": "web", "status": "in_progress"}
        fake.event(status, dict(progress, phase="fetch_source"))
        wait_starts(1)
        fake.event("deployment_log_chunk", {"deployment_uid": dep, "log_type": "build",
                                            "chunk": "line one\n", "end_offset": 9})
        fake.event("deployment_log_chunk", {"deployment_uid": dep, "final": True,
                                            "offsets": {"build": 9, "deploy": 0}})
        fake.event(status, dict(progress, phase="build"))
        wait_starts(2)
        fake.event(status, dict(progress, status="completed"))
        return _ok({"container_name": "web-v1"})
    return deploy


def _sse_text_until(client, url, marker):
    stream = client.http.get(url, stream=True, timeout=30)
    text = ""
    with gevent.Timeout(10):
        for chunk in stream.iter_content(None, decode_unicode=True):
            text += chunk
            if marker in text:
                break
    stream.close()
    return text


def test_deploy_follows_the_log_and_restarts_an_ended_stream(logged_in, fake, devserver):
    starts = []
    fake.replies["service.app.deploy"] = _deploy_with_a_stream_that_ends_early(fake, starts)
    fake.replies["service.deploy.logs.stream.start"] = lambda d: starts.append(d) or _ok({})
    csrf = logged_in.csrf("/console/agents/%s/deploy" % fake.uid)
    resp = logged_in.post("/console/agents/%s/deploy" % fake.uid, {
        "csrf": csrf, "service_uid": "web", "git_url": "https://git.example/a.git",
        "branch": "main", "port": "8080", "env": "A=1\n# comment\nB=two=2"})
    assert resp.status_code == 303
    request = fake.wait_call("service.app.deploy")[0]
    assert request["env_vars"] == {"A": "1", "B": "two=2"} and request["internal_port"] == 8080
    job = devserver.console.jobs.find(fake.uid, request["deployment_uid"])
    with gevent.Timeout(20):
        while job.state == "running":
            gevent.sleep(0.05)
    assert job.state == "succeeded", job.error
    gevent.sleep(0.5)                  # a terminal status must not start another stream
    assert len(starts) == 2, starts
    assert starts[0]["offsets"] == {} and starts[1]["offsets"] == {"build": 9, "deploy": 0}
    text = _sse_text_until(logged_in, devserver.url + resp.headers["location"] + "/stream",
                           "console_job")
    assert "line one" in text and '"completed"' in text


@pytest.mark.parametrize("domain_ok", [True, False])
def test_deploy_with_a_domain_points_it_at_the_service(logged_in, fake, devserver, domain_ok):
    fake.replies["service.app.deploy"] = _ok({"container_name": "web-v1"})
    fake.replies["service.domain.manage"] = (_ok({}) if domain_ok else
                                             {"success": False, "error": "proxy down",
                                              "code": "unavailable"})
    csrf = logged_in.csrf("/console/agents/%s/deploy" % fake.uid)
    resp = logged_in.post("/console/agents/%s/deploy" % fake.uid, {
        "csrf": csrf, "service_uid": "web", "git_url": "https://git.example/a.git",
        "port": "3000", "domain": "App.Example.com"})
    assert resp.status_code == 303
    assert fake.wait_call("service.domain.manage") == [{
        "action": "upsert", "service_uid": "web", "domain": "app.example.com", "port": 3000,
        "managed_certificate": False}]
    job = devserver.console.jobs.for_agent(fake.uid)[0]
    with gevent.Timeout(10):
        while job.state == "running":
            gevent.sleep(0.05)
    assert job.state == ("succeeded" if domain_ok else "failed")
    if not domain_ok:
        assert job.error == "deployed, but the domain failed: proxy down"
