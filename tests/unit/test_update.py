"""Self-update, worker side: signed manifests, download checks, the supervisor hand-off."""

import hashlib
import io
import json
import os
import urllib.error

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent import __version__, config
from agent.errors import AgentError
from agent.handlers import update as handlers
from agent.services.context import CallContext
from agent.handlers.registry import Registry
from agent.protocol import update as manifests
from agent.protocol.fields import load_request
from agent.services.update import UpdateService, spool_dir

BASE = "https://updates.example"
MANIFEST_URL = BASE + "/api/update/manifest"
PACKAGE = b"not really a deb, but bytes with a hash\n" * 100


class FakeWeb:
    """url -> bytes; anything else is a 404 (an opener with urllib's interface)."""

    def __init__(self):
        self.pages = {}
        self.opened = []

    def open(self, url, timeout=None):
        self.opened.append(url)
        if url not in self.pages:
            raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)
        return io.BytesIO(self.pages[url])


class FakeSupervisor:
    def __init__(self):
        self.calls = []

    def call(self, op, args=None, timeout=30.0):
        self.calls.append((op, args))
        return {}


def _publish(web, key, version, package=PACKAGE, host=BASE, tamper=None):
    manifest = {"version": version, "url": f"{host}/api/update/files/pulseup-agent_{version}_amd64.deb",
                "size": len(package), "sha256": hashlib.sha256(package).hexdigest(),
                "published_at": "2025-01-01T00:00:00Z", "changelog": "fixes"}
    body = json.dumps(manifest).encode()
    web.pages[MANIFEST_URL] = tamper(body) if tamper else body
    web.pages[MANIFEST_URL + ".sig"] = manifests.sign(body, key).encode()
    web.pages[manifest["url"]] = package
    return manifest


@pytest.fixture
def key(tmp_path):
    private = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "update.pub").write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private


@pytest.fixture
def web():
    return FakeWeb()


@pytest.fixture
def supervisor():
    return FakeSupervisor()


@pytest.fixture
def service(tmp_path, web, supervisor, key):
    cfg = config.defaults().replace(state_dir=str(tmp_path / "state"), cert_dir=str(tmp_path / "certs"),
                                    update_manifest_url=MANIFEST_URL,
                                    update_public_key_file=str(tmp_path / "update.pub"))
    return UpdateService(cfg, ipc=supervisor, opener=web)


def _code(func, *args, **kwargs):
    with pytest.raises(AgentError) as info:
        func(*args, **kwargs)
    return info.value.code


def test_check_reports_a_signed_newer_release(service, web, key):
    manifest = _publish(web, key, "99.1.0")
    reply = service.check()
    assert reply == {"current_version": __version__, "update_available": True, "latest_version": "99.1.0",
                     "download_url": manifest["url"], "checksum": manifest["sha256"],
                     "signed_at": "2025-01-01T00:00:00Z", "changelog": "fixes", "release_url": MANIFEST_URL}
    assert web.opened == [MANIFEST_URL, MANIFEST_URL + ".sig"]   # nothing downloaded by a check


def test_check_of_an_older_release(service, web, key):
    _publish(web, key, "0.0.1")
    reply = service.check()
    assert reply["update_available"] is False and reply["latest_version"] == "0.0.1"


def test_tampered_manifest_is_refused(service, web, key):
    _publish(web, key, "99.1.0", tamper=lambda body: body.replace(b"99.1.0", b"99.2.0"))
    assert _code(service.check) == "integrity_error"


def test_manifest_signed_by_another_key_is_refused(service, web):
    _publish(web, ed25519.Ed25519PrivateKey.generate(), "99.1.0")
    assert _code(service.check) == "integrity_error"


@pytest.mark.parametrize("signature", [None, b"", b"not base64!", b"AAAA"])
def test_unsigned_manifest_is_refused(service, web, key, signature):
    _publish(web, key, "99.1.0")
    if signature is None:
        del web.pages[MANIFEST_URL + ".sig"]
        assert _code(service.check) == "unavailable"
    else:
        web.pages[MANIFEST_URL + ".sig"] = signature
        assert _code(service.check) == "integrity_error"


def test_package_on_another_host_is_refused(service, web, key):
    _publish(web, key, "99.1.0", host="https://elsewhere.example")
    assert _code(service.apply) == "integrity_error"


def test_missing_key_or_url_is_a_precondition(service, web, key, tmp_path):
    _publish(web, key, "99.1.0")
    os.unlink(tmp_path / "update.pub")
    assert _code(service.check) == "failed_precondition"
    service.cfg = service.cfg.replace(update_manifest_url=None)
    assert _code(service.check) == "failed_precondition"


def test_apply_downloads_verifies_and_hands_over_to_the_supervisor(service, web, key, supervisor):
    manifest = _publish(web, key, "99.1.0")
    steps = []
    reply = service.apply(check=lambda: steps.append("check"), commit=lambda: steps.append("commit"))
    assert reply == {"message": "Update applied successfully. Agent will restart.", "version": "99.1.0"}
    file_name = "pulseup-agent_99.1.0_amd64.deb"
    assert supervisor.calls == [("agent.update.install", {"version": "99.1.0", "file_name": file_name})]
    spool = spool_dir(service.cfg)
    assert open(os.path.join(spool, file_name), "rb").read() == PACKAGE
    assert json.loads(open(os.path.join(spool, file_name + ".manifest"), "rb").read()) == manifest
    assert open(os.path.join(spool, file_name + ".manifest.sig")).read() == \
        web.pages[MANIFEST_URL + ".sig"].decode()
    assert steps[-1] == "commit" and "check" in steps


def test_tampered_package_is_refused_and_removed(service, web, key, supervisor):
    manifest = _publish(web, key, "99.1.0")
    web.pages[manifest["url"]] = PACKAGE[:-1] + b"!"
    assert _code(service.apply) == "integrity_error"
    web.pages[manifest["url"]] = PACKAGE + b"more"
    assert _code(service.apply) == "integrity_error"
    assert supervisor.calls == []
    assert os.listdir(spool_dir(service.cfg)) == []


def test_no_newer_release_means_no_update(service, web, key, supervisor):
    _publish(web, key, "0.0.1")
    assert service.apply() == {"message": "No updates available"}
    assert _code(service.apply, "v0.0.1") == "failed_precondition"     # a downgrade needs force
    assert supervisor.calls == []
    assert service.apply("v0.0.1", force=True)["version"] == "0.0.1"
    assert supervisor.calls[0][1]["version"] == "0.0.1"


def test_unknown_version_is_not_found(service, web, key):
    _publish(web, key, "99.1.0")
    assert _code(service.apply, "99.0.5") == "not_found"


def test_cancel_during_download_leaves_nothing(service, web, key, supervisor):
    _publish(web, key, "99.1.0")

    calls = []

    def cancelled():          # the first check passes, the next one (mid-download) cancels
        calls.append(1)
        if len(calls) > 1:
            raise AgentError("cancelled", "cancelled by test")
    assert _code(service.apply, check=cancelled) == "cancelled"
    assert supervisor.calls == [] and os.listdir(spool_dir(service.cfg)) == []


def test_handlers_registered_with_their_operation():
    registry = Registry()
    handlers.register(registry)
    apply = registry.get("agent.update.apply")
    assert apply.operation.operation_id({}) == "update:agent"
    assert (apply.operation.timeout_default, apply.operation.timeout_max) == (900, 3600)
    assert load_request(apply.schema, {"version": "v1.2.3"}) == {"version": "v1.2.3", "force": False}
    with pytest.raises(AgentError):
        load_request(apply.schema, {"version": "latest"})
    assert "agent.update.check" in registry and "agent.config_updated" in registry


def test_config_updated_switches_auto_update_in_memory(service):
    class FakeServices:
        def __init__(self):
            self.update, self.spawned, self.cfg = service, [], service.cfg

        def spawn(self, name, func, *args):
            self.spawned.append(name)

            class Handle:
                def kill(self, block=True):
                    pass
            return Handle()
    services = FakeServices()
    service.start(services)
    assert services.spawned == []              # AUTO_UPDATE_CHECK defaults to false
    ctx = CallContext(services, "agent.config_updated", emit=lambda e, d: None)
    request = load_request(handlers.ConfigUpdated(), {"auto_updates_enabled": True})
    assert handlers.config_updated(ctx, request) == {}
    assert service.auto_check and service.auto_apply and services.spawned == ["auto-update"]
    handlers.config_updated(ctx, load_request(handlers.ConfigUpdated(), {"auto_updates_enabled": False}))
    assert not service.auto_check and not service.auto_apply
