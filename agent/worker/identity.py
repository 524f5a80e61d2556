"""The agent's identity on disk: key, certificate, CA and enrollment.json.

docs/protocol.md, "Enrollment and certificates". ``CERT_DIR`` (0700) holds ``agent.key`` (0600,
PKCS#8 Ed25519), ``agent.crt`` and ``ca.crt`` (0644) and ``enrollment.json``
(server_uid, renewal endpoint and threshold, certificate metadata; never the
join token). Everything is staged as ``*.new`` files (temp file, fsync,
rename) before the first real file is replaced, so a refused or failed
enrollment leaves nothing behind; renewal keeps the old pair as ``*.prev``,
which :func:`load_identity` falls back to.

The exchanges with the control plane (``enroll``, ``renew``, ``Renewer``,
``ensure_identity``, ``enroll_main``) live in :mod:`agent.worker.enroll` and
are re-exported here.
"""

import base64
import contextlib
import datetime
import hashlib
import json
import os
import secrets
import ssl

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from agent import config, exitcodes, log
from agent.errors import ConfigError
from agent.fsutil import atomic_write, fsync_dir
from agent.values import rfc3339

KEY_FILE, CERT_FILE, CA_FILE, META_FILE = "agent.key", "agent.crt", "ca.crt", "enrollment.json"
DEFAULT_RENEWAL_ENDPOINT = "/api/agent/renew"
DEFAULT_RENEWAL_THRESHOLD = 0.7

_log = log.get("identity")


class EnrollmentError(Exception):
    """Enrollment or renewal failed; ``exit_code`` (agent.exitcodes) is what a process
    that cannot go on without an identity exits with."""

    def __init__(self, message, exit_code=exitcodes.ENROLL_FAILED):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class CertificateInvalid(Exception):
    """A stored or returned certificate that is not a valid identity (the reason)."""


def _utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def _iso(moment):
    return rfc3339(moment.timestamp(), precision="s")


class Identity:
    """A key with its certificate, the CA it chains to and the enrollment metadata."""

    def __init__(self, key, cert, ca_pem, server_uid, renewal_endpoint=DEFAULT_RENEWAL_ENDPOINT,
                 renewal_threshold=DEFAULT_RENEWAL_THRESHOLD):
        self.key = key
        self.cert = cert
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        self.ca_pem = ca_pem
        self.server_uid = server_uid
        self.serial = format(cert.serial_number, "x")
        self.not_before = cert.not_valid_before_utc
        self.not_after = cert.not_valid_after_utc
        self.renewal_endpoint = renewal_endpoint
        self.renewal_threshold = renewal_threshold

    def __repr__(self):
        return f"Identity({self.server_uid!r}, serial={self.serial}, not_after={_iso(self.not_after)})"

    def sign(self, nonce):
        """Base64 (padded) Ed25519 signature over the nonce's UTF-8 bytes (docs/protocol.md, "Connection")."""
        return base64.b64encode(self.key.sign(nonce.encode("utf-8"))).decode("ascii")

    def key_pem(self):
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def ssl_context(self, server_ca_file=None):
        """Client TLS context: this certificate and key, TLS >= 1.2, the server verified
        against ca.crt (plus ``server_ca_file``, docs/protocol.md, "Enrollment and certificates") and its host name.

        The pair is loaded from memory, not from CERT_DIR, so an Identity object keeps
        presenting its own certificate after a renewal replaced the files (the devserver
        refuses a proof whose certificate differs from the TLS one). Raises ConfigError
        when ``server_ca_file`` cannot be loaded.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)   # CERT_REQUIRED + check_hostname
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_verify_locations(cadata=self.ca_pem)
        if server_ca_file:
            try:
                context.load_verify_locations(cafile=server_ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"SERVER_CA_FILE={server_ca_file}: cannot load: {exc}") from None
        with _memory_file(self.cert_pem.encode() + self.key_pem()) as path:
            context.load_cert_chain(path)
        return context

    def renewal_at(self):
        """When ``renewal_threshold`` of the lifetime has passed."""
        return self.not_before + (self.not_after - self.not_before) * self.renewal_threshold

    def renewal_due(self, now=None):
        return (now or _utcnow()) >= self.renewal_at()

    def expired(self, now=None):
        return (now or _utcnow()) >= self.not_after

    def metadata(self):
        """enrollment.json's content (docs/protocol.md, "Enrollment and certificates")."""
        return {
            "server_uid": self.server_uid,
            "renewal_endpoint": self.renewal_endpoint,
            "renewal_threshold": self.renewal_threshold,
            "certificate_metadata": {
                "serial_number": self.serial, "not_before": _iso(self.not_before),
                "not_after": _iso(self.not_after),
                "fingerprint": hashlib.sha256(self.cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
            },
        }


@contextlib.contextmanager
def _memory_file(data):
    """A path to ``data`` that never touches a disk (Linux memfd; ssl only loads paths)."""
    fd = os.memfd_create("pulseup-identity", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def api_base(cfg):
    """config.api_base_url, raising EnrollmentError(CONFIG) when neither URL is set."""
    try:
        return config.api_base_url(cfg)
    except ConfigError as exc:
        raise EnrollmentError(str(exc), exitcodes.CONFIG) from None


# -- certificate checks -----------------------------------------------------

def parse_certificates(pem):
    """Every certificate of a PEM text; raises CertificateInvalid."""
    try:
        certs = x509.load_pem_x509_certificates(pem.encode() if isinstance(pem, str) else pem)
    except (ValueError, TypeError) as exc:
        raise CertificateInvalid("not a PEM certificate") from exc
    return certs


def check_certificate(cert, key, ca_certs, now=None):
    """Raise CertificateInvalid unless ``cert`` matches ``key``, is issued by one of ``ca_certs``
    (signature verified) and is inside its validity window (docs/protocol.md, "Enrollment and certificates")."""
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    try:
        matches = cert.public_key().public_bytes(*raw) == key.public_key().public_bytes(*raw)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        matches = False
    if not matches:
        raise CertificateInvalid("the certificate does not match the agent's key")
    if not any(issued_by(cert, ca) for ca in ca_certs):
        raise CertificateInvalid("the certificate does not chain to the CA")
    now = now or _utcnow()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CertificateInvalid(f"the certificate is outside its validity window "
                                 f"({_iso(cert.not_valid_before_utc)} to {_iso(cert.not_valid_after_utc)}; check the clock)")


def issued_by(cert, ca):
    """Whether ``ca`` signed ``cert`` directly (names and signature)."""
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def renewal_settings(source, current=None):
    """renewal_endpoint and renewal_threshold from ``source``; bad values fall back with a warning
    (the token is already spent, so refusing here would strand the agent)."""
    endpoint = source.get("renewal_endpoint", current.renewal_endpoint if current else DEFAULT_RENEWAL_ENDPOINT)
    threshold = source.get("renewal_threshold", current.renewal_threshold if current else DEFAULT_RENEWAL_THRESHOLD)
    # docs/protocol.md, "Enrollment and certificates": a path beginning with "/" (an absolute URL or "@host" would send the
    # agent's client certificate to another host)
    if not isinstance(endpoint, str) or not endpoint.startswith("/"):
        _log.warning("ignoring renewal_endpoint %r: not a path beginning with /", endpoint)
        endpoint = DEFAULT_RENEWAL_ENDPOINT
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        _log.warning("ignoring renewal_threshold %r: not a number between 0 and 1", threshold)
        threshold = DEFAULT_RENEWAL_THRESHOLD
    return endpoint, float(threshold)


# -- loading ---------------------------------------------------------------------------------

def load_identity(cfg, now=None):
    """The valid identity stored in CERT_DIR, trying the ``*.prev`` pair when the current one
    is missing or invalid; None when there is none. Logs why a stored pair was rejected."""
    cert_dir = cfg.cert_dir
    cas = _read_cas(cert_dir)
    if not cas:
        return None
    meta = _read_meta(cert_dir)
    for suffix in ("", ".prev"):
        key_path, cert_path = (os.path.join(cert_dir, name + suffix) for name in (KEY_FILE, CERT_FILE))
        if not (os.path.exists(key_path) or os.path.exists(cert_path)):
            continue
        try:
            return _load_pair(key_path, cert_path, cas, meta, now)
        except CertificateInvalid as exc:
            _log.warning("ignoring %s: %s", os.path.basename(cert_path), exc)
    return None


def _load_pair(key_path, cert_path, cas, meta, now):
    try:
        with open(key_path, "rb") as handle:
            key = serialization.load_pem_private_key(handle.read(), password=None)
        with open(cert_path, "rb") as handle:
            cert = parse_certificates(handle.read())[0]
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CertificateInvalid(f"unreadable key or certificate ({exc.__class__.__name__})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise CertificateInvalid("the key is not Ed25519")
    reason = CertificateInvalid("no CA certificate")
    for ca_pem, ca_cert in cas:
        try:
            check_certificate(cert, key, [ca_cert], now)
        except CertificateInvalid as exc:
            reason = exc
            continue
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        uid = meta.get("server_uid") or (names[0].value if names else None)
        endpoint, threshold = renewal_settings(meta)
        return Identity(key, cert, ca_pem, uid, endpoint, threshold)
    raise reason


def _read_cas(cert_dir):
    """[(pem, cert)] of ca.crt, then ca.crt.prev (kept when a renewal brought a new CA)."""
    cas = []
    for name in (CA_FILE, CA_FILE + ".prev"):
        try:
            with open(os.path.join(cert_dir, name), encoding="ascii") as handle:
                pem = handle.read()
            cas.extend((pem, cert) for cert in parse_certificates(pem))
        except FileNotFoundError:
            continue
        except (OSError, UnicodeError, CertificateInvalid) as exc:
            _log.warning("ignoring %s: %s", name, exc)
    return cas


def _read_meta(cert_dir):
    try:
        with open(os.path.join(cert_dir, META_FILE), encoding="utf-8") as handle:
            meta = json.load(handle)
        return meta if isinstance(meta, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        _log.warning("ignoring %s: %s", META_FILE, exc)
        return {}


# -- storing ---------------------------------------------------------------------------------

def store_identity(cfg, identity, keep_previous=False):
    """Write ``identity`` into CERT_DIR: stage every file as ``*.new``, then rename them into place.

    ``keep_previous`` (renewal) first hard-links the current key, certificate and (when it
    changes) CA to ``*.prev``; otherwise (a fresh enrollment) older ``*.prev`` files are removed
    so the loader never falls back to a former identity. Raises EnrollmentError (FAILURE);
    a failure while staging leaves CERT_DIR as it was.
    """
    cert_dir = cfg.cert_dir
    files = [(KEY_FILE, identity.key_pem(), 0o600), (CERT_FILE, identity.cert_pem.encode(), 0o644),
             (META_FILE, json.dumps(identity.metadata(), indent=2).encode() + b"\n", 0o644)]
    if _read_file(os.path.join(cert_dir, CA_FILE)) != identity.ca_pem.encode():
        files.insert(0, (CA_FILE, identity.ca_pem.encode(), 0o644))
    try:
        os.makedirs(cert_dir, mode=0o700, exist_ok=True)
        os.chmod(cert_dir, 0o700)
        staged = _stage(cert_dir, files)
        for name, _, _ in files:
            if keep_previous and name != META_FILE and os.path.exists(os.path.join(cert_dir, name)):
                _replace_link(os.path.join(cert_dir, name), os.path.join(cert_dir, name + ".prev"))
        for path in staged:
            os.replace(path, path[:-len(".new")])
        if not keep_previous:
            for name in (KEY_FILE, CERT_FILE, CA_FILE):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(cert_dir, name + ".prev"))
        fsync_dir(cert_dir)
    except OSError as exc:
        raise EnrollmentError(f"cannot store the identity in {cert_dir}: {exc.strerror or exc}",
                              exitcodes.FAILURE) from None


def _stage(cert_dir, files):
    """Write each file to ``<name>.new`` atomically; on failure remove what was staged."""
    staged = []
    try:
        for name, data, mode in files:
            path = os.path.join(cert_dir, name + ".new")
            atomic_write(path, data, mode)
            staged.append(path)
    except BaseException:   # also a gevent kill: leave no *.new behind
        for path in staged:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise
    return staged


def _replace_link(source, target):
    """Make ``target`` another name of ``source`` atomically (the current file never disappears)."""
    tmp = f"{target}.tmp-{secrets.token_hex(4)}"
    os.link(source, tmp)
    try:
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_file(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


_FROM_ENROLL = ("enroll", "ensure_identity", "renew", "Renewer", "enroll_main")


def __getattr__(name):
    """Re-export the control-plane exchanges (PEP 562: a lazy import avoids a cycle)."""
    if name in _FROM_ENROLL:
        from agent.worker import enroll as exchanges
        return getattr(exchanges, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
