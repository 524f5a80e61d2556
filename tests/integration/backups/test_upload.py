"""database.backup.download against the real devserver (mTLS, its multipart receiver and
hash check) and against a TLS stub that answers 500 twice before accepting."""
import hashlib
import json
import os
import ssl

import gevent
import psutil
import pytest

from agent.devserver.server import DevServer
from agent.errors import AgentError
from agent.services.context import CallContext
from agent.services import Services
from agent.services.system import SystemService
from agent.worker.identity import enroll, load_identity
from tests.unit.test_backup_ops_support import UploadStub, make_backup

SIZE = 256 * (1 << 20)      # docs/design.md, "Test sizes": the in-suite backup test uses about 256 MB


def _services(cfg):
    services = Services(cfg, identity_loader=load_identity)
    services.backups.uploader.backoff = 0.05
    return services


def _ctx(services, events):
    return CallContext(services, "database.backup.download", emit=lambda e, d: events.append((e, d)))


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def test_256mb_upload_reaches_the_devserver_intact_in_flat_memory(enrolled, devserver):
    cfg, identity = enrolled
    path = make_backup(os.path.join(cfg.pulseup_backup_dir, "db1"), "db1", size=SIZE)
    manifest = json.load(open(path + ".json"))
    services, events = _services(cfg), []
    process = psutil.Process()
    gevent.sleep(0.1)
    baseline, peak = process.memory_info().rss, [0]

    def sample():
        while True:
            peak[0] = max(peak[0], process.memory_info().rss)
            gevent.sleep(0.05)

    sampler = gevent.spawn(sample)
    try:
        reply = services.backups.upload(_ctx(services, events), "db1", manifest["backup_uid"])
    finally:
        sampler.kill()
    growth = (peak[0] - baseline) / (1 << 20)
    assert growth < 30, f"RSS grew by {growth:.1f} MiB during a 256 MiB upload"
    assert reply["bytes_sent"] == SIZE and reply["sha256"] == manifest["sha256"]
    stored = os.path.join(devserver.data_dir, "uploads", identity.server_uid, manifest["backup_uid"],
                          manifest["file_name"])
    assert os.path.getsize(stored) == SIZE and _sha256(stored) == manifest["sha256"]
    assert json.load(open(stored + ".manifest.json")) == manifest
    statuses = [d["status"] for e, d in events if e == "backup_download_status"]
    assert statuses[0] == "uploading" and statuses[-1] == "upload_completed"


def test_trust_is_mutual(enrolled, devserver, tmp_path):
    """The agent trusts only its control-plane CA, and the devserver only its own agents."""
    cfg, _identity = enrolled
    path = make_backup(os.path.join(cfg.pulseup_backup_dir, "db1"), "db1")
    other = DevServer(str(tmp_path / "other"), listen="127.0.0.1:0").start()
    try:
        stranger_cfg = cfg.replace(cert_dir=str(tmp_path / "stranger"), websocket_url=other.ws_url,
                                   enroll_ca_file=other.ca_file)
        stranger = enroll(stranger_cfg, other.create_token(), SystemService(cfg).hardware_info())
    finally:
        other.stop()
    # 1. an identity from another control plane does not trust this server's certificate
    services, events = _services(cfg), []
    services.backups.uploader._identity_loader = lambda _cfg: stranger
    with pytest.raises(AgentError) as info:
        services.backups.upload(_ctx(services, events), "db1", None, path)
    assert info.value.code == "permission_denied" and "certificate" in info.value.message
    # 2. told to trust the server (SERVER_CA_FILE), it is refused by the server instead
    services, events = _services(cfg.replace(server_ca_file=devserver.ca_file)), []
    services.backups.uploader._identity_loader = lambda _cfg: stranger
    with pytest.raises(AgentError) as info:
        services.backups.upload(_ctx(services, events), "db1", None, path)
    assert info.value.code in ("permission_denied", "unavailable"), info.value
    assert [d["status"] for e, d in events] == ["uploading", "upload_failed"]
    assert not os.path.exists(os.path.join(devserver.data_dir, "uploads"))


def test_500_twice_then_success_over_mtls(enrolled, devserver, tmp_path):
    cfg, _identity = enrolled
    path = make_backup(os.path.join(cfg.pulseup_backup_dir, "db1"), "db1", size=5 * (1 << 20) + 3)
    manifest = json.load(open(path + ".json"))
    cert_file, key_file = devserver.ca.ensure_server_cert("127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    context.load_verify_locations(cafile=devserver.ca.ca_file)
    context.verify_mode = ssl.CERT_REQUIRED        # no agent certificate, no upload
    with UploadStub(tmp_path / "stub", statuses=[500, 500, 200], ssl_context=context) as stub:
        os.makedirs(stub.tmp_dir, exist_ok=True)
        services, events = _services(cfg.replace(api_base_url=stub.base)), []
        reply = services.backups.upload(_ctx(services, events), "db1", manifest["backup_uid"])
    assert [r["file_sha256"] for r in stub.requests] == [manifest["sha256"]] * 3
    assert reply["status"] == "success" and reply["message"] == "Backup uploaded (HTTP 200)"
    assert [d["status"] for e, d in events] == ["uploading", "upload_completed"]
