"""database.backup.download over plain HTTP (ALLOW_INSECURE_TRANSPORT) against a local stub:
request shape, retries, 4xx, integrity, progress, pins. TLS and the devserver are in
tests/integration/backups/."""

import json
import os

import gevent
import pytest

from agent import config
from agent.errors import AgentError
from agent.services.context import CallContext
from agent.services import Services
from agent.services.backups import upload as upload_mod
from agent.worker.identity import load_identity
from tests.unit.test_backup_ops_support import UploadStub, make_backup


@pytest.fixture
def cfg(tmp_path):
    return config.defaults().replace(
        state_dir=str(tmp_path / "state"), cert_dir=str(tmp_path / "certs"),
        pulseup_backup_dir=str(tmp_path / "backups"), allow_insecure_transport=True)


class Env:
    def __init__(self, cfg, base=None):
        if base is not None:
            cfg = cfg.replace(api_base_url=base)
        self.services = Services(cfg, identity_loader=load_identity)
        self.backups = self.services.backups
        self.backups.uploader.backoff = 0.01
        self.events = []

    def ctx(self):
        return CallContext(self.services, "database.backup.download",
                           emit=lambda e, d: self.events.append((e, d)))

    def statuses(self):
        return [d["status"] for e, d in self.events if e == "backup_download_status"]


def backup_in(cfg, uid="svc", **kwargs):
    return make_backup(os.path.join(cfg.pulseup_backup_dir, uid), uid, **kwargs)


def test_upload_sends_every_part_and_streams_the_file(cfg, tmp_path):
    path = backup_in(cfg, size=3 * (1 << 20) + 17)
    manifest = json.load(open(path + ".json"))
    with UploadStub(tmp_path) as stub:
        env = Env(cfg, stub.base)
        reply = env.backups.upload(env.ctx(), "svc", manifest["backup_uid"])
    (request,) = stub.requests
    assert request["path"] == "/api/agent/backups/upload" and request["complete"]
    assert request["length"] == request["received"]          # precomputed Content-Length
    assert request["file_sha256"] == manifest["sha256"] and request["file_size"] == manifest["compressed_size"]
    assert request["file_name"] == os.path.basename(path)
    fields = request["fields"]
    assert fields["backup_uid"] == manifest["backup_uid"] and fields["service_uid"] == "svc"
    assert fields["sha256"] == manifest["sha256"] and fields["size"] == str(manifest["size"])
    assert fields["compressed_size"] == str(manifest["compressed_size"])
    assert json.loads(fields["manifest"]) == manifest
    assert reply == {"status": "success", "message": "Backup uploaded (HTTP 201)",
                     "backup_uid": manifest["backup_uid"], "backup_path": path, "service_uid": "svc",
                     "bytes_sent": manifest["compressed_size"], "sha256": manifest["sha256"]}
    assert env.statuses() == ["uploading", "upload_completed"]
    assert env.events[-1][1]["bytes_sent"] == env.events[-1][1]["bytes_total"] == manifest["compressed_size"]


def test_5xx_and_dropped_connections_are_retried(cfg, tmp_path):
    path = backup_in(cfg, size=200_000)
    with UploadStub(tmp_path, statuses=[500, 503], drop_first=1) as stub:
        env = Env(cfg, stub.base)
        reply = env.backups.upload(env.ctx(), "svc", None, backup_path=os.path.basename(path))
    assert reply["status"] == "success"
    assert len(stub.requests) == 3      # the dropped attempt never got recorded
    assert env.statuses() == ["uploading", "upload_completed"]


def test_gives_up_after_three_retries(cfg, tmp_path):
    path = backup_in(cfg)
    with UploadStub(tmp_path, statuses=[500] * 10) as stub:
        env = Env(cfg, stub.base)
        with pytest.raises(AgentError) as info:
            env.backups.upload(env.ctx(), "svc", None, backup_path=path)
    assert info.value.code == "unavailable" and len(stub.requests) == 4
    assert env.statuses() == ["uploading", "upload_failed"]
    assert "HTTP 500" in env.events[-1][1]["error_message"]


@pytest.mark.parametrize("status,code", [(400, "failed_precondition"), (403, "permission_denied"),
                                         (422, "integrity_error")])
def test_4xx_fails_at_once(cfg, tmp_path, status, code):
    path = backup_in(cfg)
    with UploadStub(tmp_path, statuses=[status]) as stub:
        env = Env(cfg, stub.base)
        with pytest.raises(AgentError) as info:
            env.backups.upload(env.ctx(), "svc", None, backup_path=path)
    assert info.value.code == code and len(stub.requests) == 1
    assert f"scripted {status}" in info.value.message


def test_checksum_is_verified_before_sending(cfg, tmp_path):
    path = backup_in(cfg, payload=b"original content")
    with open(path, "r+b") as handle:
        handle.write(b"X")
    with UploadStub(tmp_path) as stub:
        env = Env(cfg, stub.base)
        with pytest.raises(AgentError) as info:
            env.backups.upload(env.ctx(), "svc", None, backup_path=path)
    assert info.value.code == "integrity_error" and stub.requests == []
    assert env.statuses() == ["uploading", "upload_failed"]


def test_refusals_before_any_network(cfg, tmp_path):
    own = backup_in(cfg)
    other = backup_in(cfg, uid="other")
    legacy = os.path.join(cfg.pulseup_backup_dir, "svc", "old.sql")
    open(legacy, "w").write("legacy")
    env = Env(cfg, "http://127.0.0.1:9")
    cases = [(dict(backup_uid=None, backup_path=other), "invalid_argument"),
             (dict(backup_uid=None, backup_path="/etc/passwd"), "invalid_argument"),
             (dict(backup_uid=None, backup_path=legacy), "failed_precondition"),
             (dict(backup_uid="nope"), "not_found"),
             (dict(backup_uid="wrong-uid", backup_path=own), "invalid_argument")]
    for kwargs, code in cases:
        with pytest.raises(AgentError) as info:
            env.backups.upload(env.ctx(), "svc", **kwargs)
        assert info.value.code == code, kwargs
    assert env.events == []


def test_plain_http_needs_allow_insecure_transport(cfg):
    path = backup_in(cfg)
    env = Env(cfg.replace(allow_insecure_transport=False), "http://127.0.0.1:9")
    with pytest.raises(AgentError) as info:
        env.backups.upload(env.ctx(), "svc", None, backup_path=path)
    assert info.value.code == "permission_denied" and "plain HTTP" in info.value.message


def test_https_without_a_certificate_is_failed_precondition(cfg):
    path = backup_in(cfg)
    env = Env(cfg, "https://127.0.0.1:9")
    with pytest.raises(AgentError) as info:
        env.backups.upload(env.ctx(), "svc", None, backup_path=path)
    assert info.value.code == "failed_precondition" and "certificate" in info.value.message


def test_the_file_is_pinned_while_uploading(cfg, tmp_path, monkeypatch):
    path = backup_in(cfg, size=2 * (1 << 20))
    seen = []
    original = upload_mod.Uploader._send_once

    def spy(self, *args):
        seen.append(self.pins.paths())
        return original(self, *args)

    monkeypatch.setattr(upload_mod.Uploader, "_send_once", spy)
    with UploadStub(tmp_path) as stub:
        env = Env(cfg, stub.base)
        env.backups.upload(env.ctx(), "svc", None, backup_path=path)
    assert seen == [frozenset({os.path.realpath(path)})]
    assert env.backups.pins.paths() == frozenset()


def test_progress_is_throttled(cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(upload_mod, "PROGRESS_INTERVAL", 0.0)
    path = backup_in(cfg, size=3 * (1 << 20))
    with UploadStub(tmp_path) as stub:
        env = Env(cfg, stub.base)
        env.backups.upload(env.ctx(), "svc", None, backup_path=path)
    sent = [d["bytes_sent"] for e, d in env.events if d["status"] == "uploading"]
    assert sent[0] == 0 and sent[1:] == [1 << 20, 2 << 20, 3 << 20]


def test_cancellation_reports_upload_failed(cfg, tmp_path):
    path = backup_in(cfg, size=1 << 20)
    with UploadStub(tmp_path, statuses=[500] * 10) as stub:
        env = Env(cfg, stub.base)
        env.backups.uploader.backoff = 30.0       # the upload sits in its retry back-off
        greenlet = gevent.spawn(env.backups.upload, env.ctx(), "svc", None, path)
        with gevent.Timeout(10):
            while not stub.requests:
                gevent.sleep(0.05)
        greenlet.kill(block=True, timeout=5)
    assert greenlet.dead and len(stub.requests) == 1
    assert env.statuses() == ["uploading", "upload_failed"]
    assert env.events[-1][1]["error_message"] == "upload cancelled"
    assert env.backups.pins.paths() == frozenset()
