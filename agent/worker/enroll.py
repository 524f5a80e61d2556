"""The agent's certificate exchanges with the control plane: enrollment and renewal.

docs/protocol.md, "Enrollment and certificates". Plain ``http.client`` over an ``ssl`` context
(cooperative once gevent has patched the process). Enrollment trust: the
system store, or ``ENROLL_CA_FILE``, or ``ENROLL_CA_PIN`` (the CA fetched
unverified from ``GET /api/agent/ca`` and accepted only if its public key
hashes to the pin). Renewal goes over mTLS with the current certificate.
Nothing is stored before the returned certificate has been checked against the
agent's key and CA; the join token is registered as a secret and never stored.
"""

import datetime
import hashlib
import http.client
import json
import os
import pwd
import secrets
import ssl
import sys
from urllib.parse import urlsplit

import gevent
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from agent import __version__, exitcodes, log
from agent.worker.backoff import Backoff
from agent.worker.identity import (
    CertificateInvalid, EnrollmentError, Identity, api_base, check_certificate, load_identity,
    parse_certificates, renewal_settings, store_identity,
)

ENROLL_PATH = "/api/agent/enroll"
CA_PATH = "/api/agent/ca"
USER_AGENT = f"PulseUp-Agent/{__version__}"
TIMEOUT = 30.0                  # docs/protocol.md, "Enrollment and certificates"
MAX_RESPONSE = 1024 * 1024      # an enrollment answer is a few KiB

_log = log.get("identity")


# -- HTTP ------------------------------------------------------------------------------------

def request(method, url, context=None, body=None, timeout=TIMEOUT):
    """(status, body bytes) of one HTTP exchange; raises EnrollmentError."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, parts.port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        with gevent.Timeout(timeout):     # the socket timeout is per call; bound the whole exchange
            conn.request(method, parts.path or "/", body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read(MAX_RESPONSE)
    except gevent.Timeout:
        raise EnrollmentError(f"{host} did not answer within {timeout:.0f} s", exitcodes.FAILURE) from None
    except ssl.SSLCertVerificationError as exc:
        raise EnrollmentError(f"TLS verification of {host} failed: {exc.verify_message}; "
                              f"check ENROLL_CA_FILE / ENROLL_CA_PIN") from None
    except (OSError, http.client.HTTPException) as exc:
        raise EnrollmentError(f"cannot reach {host}: {exc}", exitcodes.FAILURE) from None
    finally:
        conn.close()


def post_json(url, payload, context=None, timeout=TIMEOUT):
    """(status, decoded JSON object or {}) of a JSON POST; raises EnrollmentError."""
    status, data = request("POST", url, context, json.dumps(payload).encode(), timeout)
    try:
        body = json.loads(data)
    except ValueError:
        body = {}
    return status, body if isinstance(body, dict) else {}


def _raise_for_refusal(status, body, what):
    if status == 200 and body.get("success") is True:
        return
    error = log.redact(str(body.get("error") or f"HTTP {status}"))
    if what == "enrollment" and status in (401, 403):
        raise EnrollmentError(f"join token refused: {error}")
    if status >= 500 or status == 429:
        raise EnrollmentError(f"{what} failed: the server answered {status}: {error}", exitcodes.FAILURE)
    raise EnrollmentError(f"{what} refused: {error}")


def _client_context(cafile=None, cadata=None):
    context = ssl.create_default_context(cafile=cafile, cadata=cadata)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


# -- keys and answers ------------------------------------------------------------------------

def new_key_and_csr():
    """A fresh Ed25519 key and its CSR PEM (subject O=PulseUp, OU=PulseUp Agent, CN=agent-<random>;
    the server assigns the real identity)."""
    key = ed25519.Ed25519PrivateKey.generate()
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PulseUp"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "PulseUp Agent"),
        x509.NameAttribute(NameOID.COMMON_NAME, "agent-" + secrets.token_hex(8)),
    ])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, None)
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def spki_pin(cert):
    """``sha256:<hex>`` of the DER SubjectPublicKeyInfo (docs/protocol.md, "Enrollment and certificates", kubeadm's discovery hash)."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def identity_from_response(body, key, current=None):
    """The Identity an enroll or renew response (docs/protocol.md, "Enrollment and certificates") describes, checked against
    ``key`` and the returned CA (or ``current``'s on renewal) before anything is stored.
    Raises EnrollmentError."""
    ca_pem = body.get("ca_certificate_pem") or (current.ca_pem if current else None)
    uid = body.get("server_uid") or (current.server_uid if current else None)
    if not isinstance(ca_pem, str) or not isinstance(uid, str) or not uid:
        raise EnrollmentError("the server's answer lacks the CA certificate or server_uid")
    try:
        certs = parse_certificates(body.get("certificate_pem") or "")
        ca_certs = parse_certificates(ca_pem)
        check_certificate(certs[0], key, ca_certs)
    except CertificateInvalid as exc:
        raise EnrollmentError(f"the server returned an unusable certificate: {exc}") from None
    endpoint, threshold = renewal_settings(body, current)
    return Identity(key, certs[0], ca_pem, uid, endpoint, threshold)


# -- enrollment ------------------------------------------------------------------------------

def enrollment_trust(cfg, base):
    """(TLS context or None for http://, the pin to check the returned CA with or None).
    Raises EnrollmentError (CONFIG for contradicting or insecure settings)."""
    if cfg.enroll_ca_pin and cfg.enroll_ca_file:
        raise EnrollmentError("ENROLL_CA_PIN and ENROLL_CA_FILE are both set; keep only one", exitcodes.CONFIG)
    insecure = urlsplit(base).scheme == "http"
    if insecure and not cfg.allow_insecure_transport:
        raise EnrollmentError(f"refusing to enroll over plain HTTP ({base}); use https:// "
                              f"or set ALLOW_INSECURE_TRANSPORT=true (development only)", exitcodes.CONFIG)
    if cfg.enroll_ca_pin:
        ca_pem = fetch_pinned_ca(base, cfg.enroll_ca_pin)
        return (None if insecure else _client_context(cadata=ca_pem)), cfg.enroll_ca_pin
    if insecure:
        return None, None
    if cfg.enroll_ca_file:
        try:
            return _client_context(cafile=cfg.enroll_ca_file), None
        except (OSError, ssl.SSLError) as exc:
            raise EnrollmentError(f"ENROLL_CA_FILE={cfg.enroll_ca_file}: cannot load: {exc}",
                                  exitcodes.CONFIG) from None
    return _client_context(), None


def fetch_pinned_ca(base, pin):
    """The CA PEM served at ``GET /api/agent/ca``, fetched without TLS verification and
    accepted only if one of its certificates' SPKI hashes to ``pin`` (docs/protocol.md, "Enrollment and certificates")."""
    unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE     # trust comes from the pin check below
    status, data = request("GET", base + CA_PATH, unverified)
    if status != 200:
        raise EnrollmentError(f"cannot fetch the CA to check ENROLL_CA_PIN: HTTP {status}", exitcodes.FAILURE)
    try:
        certs = parse_certificates(data)
    except CertificateInvalid:
        raise EnrollmentError("CA pin mismatch: the server's /api/agent/ca is not a PEM certificate") from None
    for cert in certs:
        if spki_pin(cert) == pin:
            return cert.public_bytes(serialization.Encoding.PEM).decode()
    served = ", ".join(spki_pin(cert) for cert in certs)
    raise EnrollmentError(f"CA pin mismatch: the server's CA is {served}, ENROLL_CA_PIN is {pin}")


def enroll(cfg, join_token, hardware_info):
    """Enroll with ``join_token`` and store the identity in CERT_DIR (docs/protocol.md, "Enrollment and certificates").

    Raises EnrollmentError: ENROLL_FAILED for refusals and trust failures, CONFIG for
    contradicting settings, FAILURE for transient trouble (unreachable, 5xx, disk).
    """
    log.register_secret(join_token)
    base = api_base(cfg)
    context, pin = enrollment_trust(cfg, base)
    key, csr_pem = new_key_and_csr()
    payload = {"join_token": join_token, "csr_pem": csr_pem, "hardware_info": hardware_info}
    status, body = post_json(base + ENROLL_PATH, payload, context)
    _raise_for_refusal(status, body, "enrollment")
    identity = identity_from_response(body, key)
    if pin and all(spki_pin(ca) != pin for ca in parse_certificates(identity.ca_pem)):
        raise EnrollmentError("CA pin mismatch: the CA returned at enrollment is not the pinned CA")
    store_identity(cfg, identity)
    _log.info("enrolled as %s (certificate %s valid until %s); the join token is used up and "
              "can be removed from the config", identity.server_uid, identity.serial,
              identity.not_after.isoformat())
    return identity


def ensure_identity(cfg, hardware_info):
    """The stored identity, else a new one enrolled with JOIN_TOKEN.

    ``hardware_info`` is the HardwareInfo dict or a callable returning it (only called
    when enrolling). Raises EnrollmentError (NO_IDENTITY without a token).
    """
    identity = load_identity(cfg)
    if identity is not None:
        return identity
    if not cfg.join_token:
        raise EnrollmentError(f"no valid certificate in {cfg.cert_dir} and no JOIN_TOKEN to enroll with; "
                              f"set JOIN_TOKEN or run `pulseup-agent enroll`", exitcodes.NO_IDENTITY)
    return enroll(cfg, cfg.join_token, hardware_info() if callable(hardware_info) else hardware_info)


# -- renewal ---------------------------------------------------------------------------------

def renew(cfg, identity):
    """A new key and certificate from ``<base><renewal_endpoint>`` over mTLS, stored with the
    old pair kept as ``*.prev`` (docs/protocol.md, "Enrollment and certificates"). Raises EnrollmentError; nothing is stored then."""
    base = api_base(cfg)
    if urlsplit(base).scheme == "http" and not cfg.allow_insecure_transport:
        raise EnrollmentError(f"refusing to renew over plain HTTP ({base})", exitcodes.CONFIG)
    context = identity.ssl_context(cfg.server_ca_file) if base.startswith("https:") else None
    key, csr_pem = new_key_and_csr()
    payload = {"csr_pem": csr_pem, "current_serial": identity.serial}
    status, body = post_json(base + identity.renewal_endpoint, payload, context)
    _raise_for_refusal(status, body, "renewal")
    renewed = identity_from_response(body, key, current=identity)
    if renewed.server_uid != identity.server_uid:
        raise EnrollmentError(f"renewal answered for {renewed.server_uid!r}, not {identity.server_uid!r}")
    store_identity(cfg, renewed, keep_previous=True)
    return renewed


class Renewer:
    """Renews the certificate once its threshold has passed (docs/protocol.md, "Enrollment and certificates").

    ``get_identity()`` returns the identity in use; ``on_renewed(identity)`` is called
    after each renewal (the connection then reconnects at a quiet moment) and should make
    ``get_identity`` return the new one. Failures are retried with capped, jittered
    backoff while the old certificate keeps working. ``run()`` never returns; spawn it
    through ``services.spawn``.
    """

    RECHECK = 600.0      # re-read get_identity() at least this often (re-enrollment)

    def __init__(self, cfg, get_identity, on_renewed, retry_initial=30.0, retry_max=1800.0,
                 renew_func=renew, sleep=gevent.sleep):
        self.cfg = cfg
        self.get_identity = get_identity
        self.on_renewed = on_renewed
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.renew_func = renew_func
        self.sleep = sleep
        self.attempts = Backoff(retry_initial, retry_max)

    def run(self):
        while True:
            self.sleep(self.step())

    def step(self):
        """One pass: renew if due; returns how long to sleep before the next pass."""
        identity = self.get_identity()
        if identity is None:
            return self.RECHECK
        due_in = (identity.renewal_at() - _now()).total_seconds()
        if due_in > 0:
            return min(due_in, self.RECHECK)
        if identity.expired():
            _log.error("certificate %s expired at %s before it could be renewed", identity.serial,
                       identity.not_after.isoformat())
            return self.RECHECK
        try:
            renewed = self.renew_func(self.cfg, identity)
        except EnrollmentError as exc:
            delay = self.backoff(identity)
            _log.warning("certificate renewal failed (attempt %d): %s; keeping certificate %s, "
                         "retrying in %.0f s", self.attempts.failures, exc.message, identity.serial, delay)
            return delay
        self.attempts.reset()
        _log.info("certificate renewed: serial %s valid until %s", renewed.serial, renewed.not_after.isoformat())
        self.on_renewed(renewed)
        # A server issuing certificates already past their threshold must not make this spin.
        return self.retry_initial

    def backoff(self, identity):
        """Record a failure: equal jitter (docs/protocol.md, "Connection") doubling from retry_initial to retry_max,
        and at most a quarter of the remaining lifetime so several attempts fit before expiry."""
        delay = self.attempts.next_delay()
        remaining = (identity.not_after - _now()).total_seconds()
        return max(1.0, min(delay, remaining / 4))


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


# -- `pulseup-agent enroll` ------------------------------------------------------------------

def enroll_main(cfg, join_token_file=None):
    """The ``enroll`` command: enroll once, print the identity, hand the files to WORKER_USER."""
    try:
        existing = load_identity(cfg)
        if existing is not None:
            _print_identity("already enrolled", existing, cfg)
            print(f"To enroll again, remove the files in {cfg.cert_dir} first.")
            return exitcodes.OK
        token = read_join_token(cfg, join_token_file)
        from agent.services.system import SystemService
        identity = enroll(cfg, token, SystemService(cfg).hardware_info())
        _hand_over(cfg)
    except EnrollmentError as exc:
        print(f"pulseup-agent enroll: {exc.message}", file=sys.stderr)
        return exc.exit_code
    _print_identity("enrolled", identity, cfg)
    print("The join token is used up; it can be removed from the config.")
    return exitcodes.OK


def read_join_token(cfg, join_token_file=None):
    """The token from ``join_token_file`` (a path, or "-" for stdin), else from the config
    or environment (docs/protocol.md, "Enrollment and certificates": never from a command-line value). Raises EnrollmentError."""
    if join_token_file == "-":
        token = sys.stdin.readline().strip()
    elif join_token_file:
        try:
            with open(join_token_file, encoding="utf-8") as handle:
                token = handle.read().strip()
        except (OSError, UnicodeError) as exc:
            raise EnrollmentError(f"cannot read the join token file {join_token_file}: {exc}",
                                  exitcodes.CONFIG) from None
    else:
        token = cfg.join_token or ""
    if not token:
        raise EnrollmentError("no join token: set JOIN_TOKEN in the config or environment, "
                              "or pass --join-token-file FILE ('-' reads stdin)", exitcodes.CONFIG)
    return token


def _hand_over(cfg):
    """As root, give CERT_DIR and its files to WORKER_USER (docs/protocol.md, "Enrollment and certificates")."""
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam(cfg.worker_user)
    except KeyError:
        print(f"note: user {cfg.worker_user} does not exist; {cfg.cert_dir} stays owned by root")
        return
    try:
        os.chown(cfg.cert_dir, user.pw_uid, user.pw_gid)
        for name in os.listdir(cfg.cert_dir):
            os.chown(os.path.join(cfg.cert_dir, name), user.pw_uid, user.pw_gid, follow_symlinks=False)
    except OSError as exc:
        raise EnrollmentError(f"enrolled, but cannot hand {cfg.cert_dir} to {cfg.worker_user}: {exc}",
                              exitcodes.FAILURE) from None


def _print_identity(what, identity, cfg):
    print(f"{what}: server_uid {identity.server_uid}, certificate serial {identity.serial}, "
          f"valid until {identity.not_after.isoformat()}, stored in {cfg.cert_dir}")
