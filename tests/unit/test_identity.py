"""Identity: loading, validity rules, atomic storage, answers, trust settings, the Renewer.

A CA is made here with `cryptography`; the devserver tests in tests/identity/
cover the same code against the real control-plane implementation.
"""

import base64
import datetime
import io
import json
import os
import socket
import ssl
import stat

import gevent
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from agent import config, exitcodes
from agent.errors import ConfigError
from agent.worker import enroll as exchanges
from agent.worker import identity as idmod
from agent.worker.identity import EnrollmentError, Identity, api_base, load_identity, store_identity

UTC = datetime.timezone.utc
HOUR = datetime.timedelta(hours=1)


def now():
    return datetime.datetime.now(UTC)


class CA:
    def __init__(self, name="Test CA"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now() - HOUR).not_valid_after(now() + 24 * HOUR)
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, public_key, cn="srv-test", start=None, end=None, server=False):
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                   .issuer_name(self.cert.subject).public_key(public_key)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(start or now() - HOUR).not_valid_after(end or now() + HOUR))
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        return builder.sign(self.key, hashes.SHA256())


def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture
def ca():
    return CA()


@pytest.fixture
def cfg(tmp_path):
    return config.defaults().replace(cert_dir=str(tmp_path / "certs"),
                                     websocket_url="wss://api.example.com/ws/agent_v2")


def make_identity(ca, uid="srv-test", start=None, end=None, threshold=0.7):
    key = ed25519.Ed25519PrivateKey.generate()
    return Identity(key, ca.issue(key.public_key(), uid, start, end), ca.pem, uid,
                    "/api/agent/renew", threshold)


# -- api_base ---------------------------------------------------------------------------------

@pytest.mark.parametrize("url, base", [
    ("wss://api.example.com/ws/agent_v2", "https://api.example.com"),
    ("ws://127.0.0.1:8080/ws/agent_v2", "http://127.0.0.1:8080"),
    ("wss://example.com/pulseup/ws/agent_v2?x=1", "https://example.com/pulseup"),
    ("wss://example.com/agent", "https://example.com"),
    ("wss://[::1]:9443/ws/x/ws/y", "https://[::1]:9443"),
])
def test_api_base_from_websocket_url(cfg, url, base):
    assert api_base(cfg.replace(websocket_url=url)) == base


def test_api_base_setting_wins(cfg):
    assert api_base(cfg.replace(api_base_url="https://other.example.com/")) == "https://other.example.com"


def test_api_base_needs_a_url(cfg):
    with pytest.raises(EnrollmentError) as info:
        api_base(cfg.replace(websocket_url=None))
    assert info.value.exit_code == exitcodes.CONFIG


# -- Identity ---------------------------------------------------------------------------------

def test_sign_is_padded_base64_ed25519_over_the_nonce(ca):
    identity = make_identity(ca)
    signature = identity.sign("nonce-ä-1234567890")
    raw = base64.b64decode(signature, validate=True)
    assert len(raw) == 64 and signature.endswith("=")
    identity.cert.public_key().verify(raw, "nonce-ä-1234567890".encode())


def test_renewal_due_and_expired(ca):
    start = now() - 7 * HOUR
    identity = make_identity(ca, start=start, end=start + 10 * HOUR, threshold=0.7)
    assert identity.renewal_at() == identity.not_before + 7 * HOUR
    assert not identity.renewal_due(start + 6 * HOUR)
    assert identity.renewal_due(start + 7 * HOUR)
    assert identity.renewal_due(identity.renewal_at())
    assert not identity.expired(start + 9 * HOUR)
    assert identity.expired(start + 10 * HOUR)
    assert identity.serial == format(identity.cert.serial_number, "x")
    assert "PRIVATE" not in repr(identity)


def test_ssl_context_presents_its_own_pair_and_verifies_the_server(ca, tmp_path):
    identity = make_identity(ca)
    server_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "server.pem").write_text(
        pem(ca.issue(server_key.public_key(), "localhost", server=True))
        + server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()).decode())
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(tmp_path / "server.pem"))
    server_ctx.load_verify_locations(cadata=ca.pem)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    seen = []

    def serve():
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            seen.append(tls.getpeercert(binary_form=True))
            tls.recv(1)

    server = gevent.spawn(serve)
    context = identity.ssl_context()
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    with socket.create_connection(listener.getsockname()) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"x")
    server.join(timeout=10)
    listener.close()
    assert seen == [identity.cert.public_bytes(serialization.Encoding.DER)]
    # the server must chain to the identity's CA, and match the host name
    stranger = make_identity(CA("Other CA"))
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        _handshake(stranger.ssl_context(), server_ctx, "localhost")
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(identity.ssl_context(), server_ctx, "api.example.com")


def _handshake(client_ctx, server_ctx, hostname):
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        try:
            server_ctx.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            conn.close()
    server = gevent.spawn(serve)
    try:
        with socket.create_connection(listener.getsockname()) as raw:
            client_ctx.wrap_socket(raw, server_hostname=hostname).close()
    finally:
        server.join(timeout=10)
        listener.close()


def test_ssl_context_bad_server_ca_file_is_a_config_error(ca, tmp_path):
    with pytest.raises(ConfigError):
        make_identity(ca).ssl_context(str(tmp_path / "missing.pem"))


# -- store and load ---------------------------------------------------------------------------

def test_store_then_load_round_trip_with_modes(cfg, ca):
    identity = make_identity(ca)
    store_identity(cfg, identity)
    files = sorted(os.listdir(cfg.cert_dir))
    assert files == ["agent.crt", "agent.key", "ca.crt", "enrollment.json"]
    mode = lambda name: stat.S_IMODE(os.stat(os.path.join(cfg.cert_dir, name)).st_mode)  # noqa: E731
    assert stat.S_IMODE(os.stat(cfg.cert_dir).st_mode) == 0o700
    assert (mode("agent.key"), mode("agent.crt"), mode("ca.crt")) == (0o600, 0o644, 0o644)
    meta = json.loads(open(os.path.join(cfg.cert_dir, "enrollment.json")).read())
    assert meta["server_uid"] == "srv-test" and meta["renewal_threshold"] == 0.7
    assert meta["certificate_metadata"]["serial_number"] == identity.serial
    loaded = load_identity(cfg)
    assert (loaded.server_uid, loaded.serial, loaded.cert_pem, loaded.ca_pem) == \
        (identity.server_uid, identity.serial, identity.cert_pem, identity.ca_pem)
    assert loaded.key.public_key().public_bytes_raw() == identity.key.public_key().public_bytes_raw()


def test_store_tightens_an_existing_directory(cfg, ca):
    os.makedirs(cfg.cert_dir, mode=0o755)
    os.chmod(cfg.cert_dir, 0o755)
    store_identity(cfg, make_identity(ca))
    assert stat.S_IMODE(os.stat(cfg.cert_dir).st_mode) == 0o700


def test_load_without_files_is_none(cfg):
    assert load_identity(cfg) is None


@pytest.mark.parametrize("problem", ["wrong key", "other CA", "expired", "not yet valid", "garbage"])
def test_load_refuses_invalid_pairs(cfg, ca, problem):
    identity = make_identity(ca)
    if problem == "expired":
        identity = make_identity(ca, start=now() - 3 * HOUR, end=now() - HOUR)
    elif problem == "not yet valid":
        identity = make_identity(ca, start=now() + HOUR, end=now() + 3 * HOUR)
    store_identity(cfg, identity)
    path = os.path.join(cfg.cert_dir, "agent.key" if problem in ("wrong key", "garbage") else "ca.crt")
    if problem == "wrong key":
        other = ed25519.Ed25519PrivateKey.generate()
        data = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
    elif problem == "other CA":
        data = CA("Other CA").pem.encode()
    elif problem == "garbage":
        data = b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n"
    if problem in ("wrong key", "other CA", "garbage"):
        with open(path, "wb") as handle:
            handle.write(data)
    assert load_identity(cfg) is None


def test_renewal_keeps_prev_and_loader_falls_back(cfg, ca):
    first = make_identity(ca)
    store_identity(cfg, first)
    second = make_identity(ca)
    store_identity(cfg, second, keep_previous=True)
    assert load_identity(cfg).serial == second.serial
    assert sorted(os.listdir(cfg.cert_dir)) == ["agent.crt", "agent.crt.prev", "agent.key", "agent.key.prev",
                                                "ca.crt", "enrollment.json"]
    # a crash between the two renames: new key, old certificate -> the *.prev pair is used
    os.replace(os.path.join(cfg.cert_dir, "agent.crt.prev"), os.path.join(cfg.cert_dir, "agent.crt"))
    os.link(os.path.join(cfg.cert_dir, "agent.crt"), os.path.join(cfg.cert_dir, "agent.crt.prev"))
    assert load_identity(cfg).serial == first.serial


def test_fresh_enrollment_drops_older_prev_files(cfg, ca):
    store_identity(cfg, make_identity(ca))
    store_identity(cfg, make_identity(ca), keep_previous=True)
    store_identity(cfg, make_identity(ca))
    assert not [name for name in os.listdir(cfg.cert_dir) if name.endswith(".prev")]


def test_new_ca_on_renewal_keeps_ca_prev(cfg, ca):
    first = make_identity(ca)
    store_identity(cfg, first)
    rotated = CA("Rotated CA")
    store_identity(cfg, make_identity(rotated), keep_previous=True)
    assert open(os.path.join(cfg.cert_dir, "ca.crt.prev")).read() == ca.pem
    os.unlink(os.path.join(cfg.cert_dir, "agent.crt"))     # new pair lost -> old pair, old CA
    assert load_identity(cfg).serial == first.serial


def test_failed_staging_leaves_the_directory_unchanged(cfg, ca, monkeypatch):
    store_identity(cfg, make_identity(ca))
    before = {name: open(os.path.join(cfg.cert_dir, name), "rb").read() for name in os.listdir(cfg.cert_dir)}
    real = idmod.atomic_write
    calls = []

    def flaky(path, data, mode):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(path, data, mode)

    monkeypatch.setattr(idmod, "atomic_write", flaky)
    with pytest.raises(EnrollmentError, match="No space left") as info:
        store_identity(cfg, make_identity(CA("New CA")), keep_previous=True)
    assert info.value.exit_code == exitcodes.FAILURE
    after = {name: open(os.path.join(cfg.cert_dir, name), "rb").read() for name in os.listdir(cfg.cert_dir)}
    assert after == before


# -- answers from the control plane -----------------------------------------------------------

def answer(ca, key, **changes):
    body = {"success": True, "server_uid": "srv-1", "certificate_pem": pem(ca.issue(key.public_key(), "srv-1")),
            "ca_certificate_pem": ca.pem, "renewal_endpoint": "/api/agent/renew", "renewal_threshold": 0.6}
    body.update(changes)
    return body


def test_answer_accepted(ca):
    key = ed25519.Ed25519PrivateKey.generate()
    identity = exchanges.identity_from_response(answer(ca, key), key)
    assert (identity.server_uid, identity.renewal_threshold) == ("srv-1", 0.6)


@pytest.mark.parametrize("change, message", [
    ("other key", "does not match the agent's key"),
    ("other CA", "does not chain to the CA"),
    ("expired", "outside its validity window"),
    ("no CA", "lacks the CA certificate"),
    ("garbage", "not a PEM certificate"),
])
def test_answer_refused(ca, change, message):
    key = ed25519.Ed25519PrivateKey.generate()
    other = ed25519.Ed25519PrivateKey.generate()
    body = {
        "other key": lambda: answer(ca, key, certificate_pem=pem(ca.issue(other.public_key()))),
        "other CA": lambda: answer(ca, key, ca_certificate_pem=CA("Other").pem),
        "expired": lambda: answer(ca, key, certificate_pem=pem(ca.issue(key.public_key(), end=now() - HOUR,
                                                                        start=now() - 2 * HOUR))),
        "no CA": lambda: answer(ca, key, ca_certificate_pem=None),
        "garbage": lambda: answer(ca, key, certificate_pem="hello"),
    }[change]()
    with pytest.raises(EnrollmentError, match=message):
        exchanges.identity_from_response(body, key)


def test_answer_with_unsafe_renewal_endpoint_falls_back(ca):
    key = ed25519.Ed25519PrivateKey.generate()
    body = answer(ca, key, renewal_endpoint="@evil.example.com/renew", renewal_threshold=7)
    identity = exchanges.identity_from_response(body, key)
    assert (identity.renewal_endpoint, identity.renewal_threshold) == ("/api/agent/renew", 0.7)


def test_renewal_answer_may_omit_the_ca(ca):
    current = make_identity(ca, uid="srv-1")
    key = ed25519.Ed25519PrivateKey.generate()
    body = answer(ca, key)
    del body["ca_certificate_pem"], body["renewal_threshold"]
    current.renewal_threshold = 0.5
    renewed = exchanges.identity_from_response(body, key, current=current)
    assert renewed.ca_pem == ca.pem and renewed.renewal_threshold == 0.5


def test_csr_subject_and_key():
    key, csr_pem = exchanges.new_key_and_csr()
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    assert csr.is_signature_valid
    names = {attr.oid: attr.value for attr in csr.subject}
    assert names[NameOID.ORGANIZATION_NAME] == "PulseUp"
    assert names[NameOID.ORGANIZATIONAL_UNIT_NAME] == "PulseUp Agent"
    assert names[NameOID.COMMON_NAME].startswith("agent-") and len(names[NameOID.COMMON_NAME]) > 10
    assert csr.public_key().public_bytes_raw() == key.public_key().public_bytes_raw()


# -- trust settings, token sources, ensure_identity -------------------------------------------

def test_pin_and_file_together_is_a_config_error(cfg, tmp_path):
    both = cfg.replace(enroll_ca_pin="sha256:" + "0" * 64, enroll_ca_file=str(tmp_path / "ca.pem"))
    with pytest.raises(EnrollmentError, match="both set") as info:
        exchanges.enrollment_trust(both, "https://api.example.com")
    assert info.value.exit_code == exitcodes.CONFIG


def test_plain_http_needs_the_insecure_switch(cfg):
    with pytest.raises(EnrollmentError, match="ALLOW_INSECURE_TRANSPORT") as info:
        exchanges.enrollment_trust(cfg, "http://127.0.0.1:8080")
    assert info.value.exit_code == exitcodes.CONFIG
    assert exchanges.enrollment_trust(cfg.replace(allow_insecure_transport=True), "http://x") == (None, None)


def test_missing_ca_file_is_a_config_error(cfg, tmp_path):
    with pytest.raises(EnrollmentError, match="ENROLL_CA_FILE") as info:
        exchanges.enrollment_trust(cfg.replace(enroll_ca_file=str(tmp_path / "nope.pem")), "https://x")
    assert info.value.exit_code == exitcodes.CONFIG


def test_ensure_identity_without_token_is_no_identity(cfg):
    with pytest.raises(EnrollmentError, match="no JOIN_TOKEN") as info:
        exchanges.ensure_identity(cfg, lambda: pytest.fail("hardware info gathered for nothing"))
    assert info.value.exit_code == exitcodes.NO_IDENTITY


def test_ensure_identity_returns_the_stored_one(cfg, ca):
    stored = make_identity(ca)
    store_identity(cfg, stored)
    assert exchanges.ensure_identity(cfg.replace(join_token="unused-token"), {}).serial == stored.serial


def test_join_token_sources(cfg, tmp_path, monkeypatch):
    (tmp_path / "token").write_text("  file-token\n")
    assert exchanges.read_join_token(cfg, str(tmp_path / "token")) == "file-token"
    monkeypatch.setattr("sys.stdin", io.StringIO("stdin-token\n"))
    assert exchanges.read_join_token(cfg, "-") == "stdin-token"
    assert exchanges.read_join_token(cfg.replace(join_token="cfg-token")) == "cfg-token"
    with pytest.raises(EnrollmentError, match="no join token") as info:
        exchanges.read_join_token(cfg)
    assert info.value.exit_code == exitcodes.CONFIG
    with pytest.raises(EnrollmentError, match="cannot read"):
        exchanges.read_join_token(cfg, str(tmp_path / "missing"))


def test_enroll_main_reports_an_existing_identity(cfg, ca, capsys):
    store_identity(cfg, make_identity(ca))
    assert exchanges.enroll_main(cfg) == exitcodes.OK
    assert "already enrolled: server_uid srv-test" in capsys.readouterr().out


def test_public_api_is_reexported():
    from agent.worker.identity import Renewer, enroll, enroll_main, ensure_identity, renew
    assert (enroll, ensure_identity, renew, Renewer, enroll_main) == (
        exchanges.enroll, exchanges.ensure_identity, exchanges.renew, exchanges.Renewer, exchanges.enroll_main)
    with pytest.raises(AttributeError):
        idmod.no_such_name


# -- Renewer ----------------------------------------------------------------------------------

class FakeRenewals:
    def __init__(self, ca, fail=0):
        self.ca, self.fail, self.calls = ca, fail, 0

    def __call__(self, cfg, identity):
        self.calls += 1
        if self.calls <= self.fail:
            raise EnrollmentError("server unreachable", exitcodes.FAILURE)
        return make_identity(self.ca)


def test_renewer_waits_until_the_threshold(cfg, ca):
    identity = make_identity(ca, start=now() - HOUR, end=now() + 9 * HOUR, threshold=0.5)
    renewals = FakeRenewals(ca)
    renewer = exchanges.Renewer(cfg, lambda: identity, pytest.fail, renew_func=renewals)
    assert renewer.step() == renewer.RECHECK            # due in 4 h: re-check in 10 min
    identity.renewal_threshold = 0.11                  # due in ~6 min
    assert 300 < renewer.step() < 400
    assert renewals.calls == 0


def test_renewer_renews_and_reports(cfg, ca):
    current = [make_identity(ca, start=now() - 8 * HOUR, end=now() + 2 * HOUR)]
    renewer = exchanges.Renewer(cfg, lambda: current[0], current.append, retry_initial=5,
                                renew_func=FakeRenewals(ca))
    assert renewer.step() == 5
    assert len(current) == 2 and current[1].serial != current[0].serial


def test_renewer_backs_off_and_keeps_the_old_certificate(cfg, ca):
    identity = make_identity(ca, start=now() - 8 * HOUR, end=now() + 2 * HOUR)
    renewed = []
    renewer = exchanges.Renewer(cfg, lambda: identity, renewed.append, retry_initial=10, retry_max=100,
                                renew_func=FakeRenewals(ca, fail=6))
    delays = [renewer.step() for _ in range(6)]
    ceilings = [10, 20, 40, 80, 100, 100]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings)), delays
    assert renewed == []
    assert renewer.step() == 10 and len(renewed) == 1       # 7th attempt succeeds, backoff reset
    assert renewer.attempts.failures == 0


def test_renewer_retries_fit_before_expiry(cfg, ca):
    identity = make_identity(ca, start=now() - 2 * HOUR, end=now() + datetime.timedelta(seconds=40))
    renewer = exchanges.Renewer(cfg, lambda: identity, pytest.fail, retry_initial=600,
                                renew_func=FakeRenewals(ca, fail=99))
    assert 1.0 <= renewer.step() <= 10.0                    # a quarter of the 40 s left


def test_renewer_gives_up_on_an_expired_certificate(cfg, ca):
    identity = make_identity(ca, start=now() - 3 * HOUR, end=now() - HOUR)
    renewals = FakeRenewals(ca)
    renewer = exchanges.Renewer(cfg, lambda: identity, pytest.fail, renew_func=renewals)
    assert renewer.step() == renewer.RECHECK and renewals.calls == 0


@pytest.mark.parametrize("status, body, what, message, code", [
    (200, {"success": True}, "renewal", None, None),
    (401, {"error": "Token expired"}, "enrollment", "^join token refused: Token expired$", exitcodes.ENROLL_FAILED),
    (403, {"error": "Certificate revoked"}, "renewal", "^renewal refused: Certificate revoked$", exitcodes.ENROLL_FAILED),
    (400, {"success": False, "error": "Invalid CSR"}, "enrollment", "^enrollment refused: Invalid CSR$", exitcodes.ENROLL_FAILED),
    (200, {"success": False}, "enrollment", "^enrollment refused: HTTP 200$", exitcodes.ENROLL_FAILED),
    (502, {}, "enrollment", "server answered 502: HTTP 502", exitcodes.FAILURE),
    (429, {"error": "slow down"}, "renewal", "server answered 429: slow down", exitcodes.FAILURE),
])
def test_refusals_map_to_messages_and_exit_codes(status, body, what, message, code):
    if message is None:
        exchanges._raise_for_refusal(status, body, what)
        return
    with pytest.raises(EnrollmentError, match=message) as info:
        exchanges._raise_for_refusal(status, body, what)
    assert info.value.exit_code == code
