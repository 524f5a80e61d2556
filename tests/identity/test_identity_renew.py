"""Renewal against the real devserver over mTLS (docs/protocol.md, "Enrollment and certificates")."""

import os

import gevent
import gevent.event
import pytest

from agent import exitcodes
from agent.devserver.server import DevServer
from agent.services import Services
from agent.worker.identity import EnrollmentError, Renewer, enroll, load_identity, renew
from tests.identity.idsupport import authenticate, cert_dir_entries


@pytest.fixture
def short_lived(tmp_path):
    """A devserver issuing 20 s certificates (plus its 60 s backdating)."""
    srv = DevServer(str(tmp_path / "dev-short"), cert_lifetime=20, auth_timeout=5.0).start()
    yield srv
    srv.stop()


@pytest.fixture
def enrolled(short_lived, cfg, hardware_info):
    cfg = cfg.replace(websocket_url=short_lived.ws_url, enroll_ca_pin=short_lived.ca_pin)
    return cfg, enroll(cfg, short_lived.create_token(), hardware_info)


def read(cfg, name):
    with open(os.path.join(cfg.cert_dir, name), "rb") as handle:
        return handle.read()


def test_renewal_before_expiry_keeps_prev(short_lived, enrolled):
    cfg, old = enrolled
    assert old.renewal_due() and not old.expired()
    old_key, old_crt = read(cfg, "agent.key"), read(cfg, "agent.crt")
    new = renew(cfg, old)
    assert new.serial != old.serial and new.server_uid == old.server_uid
    assert (read(cfg, "agent.key.prev"), read(cfg, "agent.crt.prev")) == (old_key, old_crt)
    assert read(cfg, "agent.crt").decode() == new.cert_pem
    assert not [name for name in cert_dir_entries(cfg) if ".new" in name or ".tmp" in name]
    assert load_identity(cfg).serial == new.serial
    assert authenticate(short_lived, new)["success"] is True
    # the old in-memory identity still presents its own pair, not the files now on disk
    assert authenticate(short_lived, old)["success"] is True


def test_failed_renewal_keeps_the_old_identity(short_lived, enrolled):
    cfg, old = enrolled
    before = {name: read(cfg, name) for name in cert_dir_entries(cfg)}
    short_lived.stop()
    with pytest.raises(EnrollmentError, match="cannot reach") as info:
        renew(cfg, old)
    assert info.value.exit_code == exitcodes.FAILURE
    assert {name: read(cfg, name) for name in cert_dir_entries(cfg)} == before
    assert load_identity(cfg).serial == old.serial


def test_revoked_certificate_is_not_renewed(short_lived, enrolled):
    cfg, old = enrolled
    short_lived.revoke(old.server_uid)
    with pytest.raises(EnrollmentError, match="renewal refused: Certificate revoked"):
        renew(cfg, old)
    assert load_identity(cfg).serial == old.serial


def test_renewer_loop_renews_and_reports(short_lived, enrolled):
    cfg, old = enrolled
    current = [old]
    renewed = gevent.event.Event()

    def on_renewed(identity):
        current.append(identity)
        renewed.set()

    services = Services(cfg)
    renewer = Renewer(cfg, lambda: current[-1], on_renewed, retry_initial=60)
    services.spawn("identity.renewer", renewer.run)
    try:
        assert renewed.wait(timeout=30), "no renewal within 30 s"
    finally:
        services.close(timeout=1)
    assert current[-1].serial != old.serial
    assert load_identity(cfg).serial == current[-1].serial


def test_renewer_retries_while_the_server_is_down(short_lived, enrolled):
    cfg, old = enrolled
    short_lived.stop()
    renewer = Renewer(cfg, lambda: old, pytest.fail, retry_initial=2, retry_max=8)
    delays = [renewer.step() for _ in range(3)]
    assert all(1.0 <= delay <= 8 for delay in delays), delays
    assert renewer.attempts.failures == 3
    assert load_identity(cfg).serial == old.serial


def test_renewal_for_another_server_uid_is_refused(short_lived, enrolled, monkeypatch):
    from agent.worker import enroll as exchanges
    cfg, old = enrolled
    real_post = exchanges.post_json

    def other_uid(url, payload, context=None, timeout=exchanges.TIMEOUT):
        status, body = real_post(url, payload, context, timeout)
        body["server_uid"] = "srv-someone-else"
        return status, body

    monkeypatch.setattr(exchanges, "post_json", other_uid)
    with pytest.raises(EnrollmentError, match="renewal answered for 'srv-someone-else'"):
        renew(cfg, old)
    assert not os.path.exists(os.path.join(cfg.cert_dir, "agent.crt.prev"))
    assert load_identity(cfg).serial == old.serial
