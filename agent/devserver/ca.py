"""The dev control plane's certificate authority.

CA and server certificate are ECDSA P-256 (browsers refuse Ed25519 server certificates);
agent keys are Ed25519 (docs/devserver.md). Keys are PKCS#8 PEM files with mode 0600.
"""

import datetime
import hashlib
import ipaddress
import os
import socket
import uuid

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.devserver.store import atomic_write

CA_LIFETIME = datetime.timedelta(days=3650)
SERVER_LIFETIME = datetime.timedelta(days=365)
# Issued certificates start a minute in the past so a slightly slow agent clock accepts them.
BACKDATE = datetime.timedelta(seconds=60)


class CertError(Exception):
    """A certificate or CSR was refused; the message is the wire error text."""


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _write_key(path, key):
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    atomic_write(path, pem, 0o600)


def _write_cert(path, cert):
    atomic_write(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _load_key(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def _load_cert(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def spki_pin(cert):
    """`sha256:<hex>` of the DER SubjectPublicKeyInfo (kubeadm's discovery hash)."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def fingerprint(cert):
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def serial_hex(cert):
    return format(cert.serial_number, "x")


def iso(dt):
    return dt.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def cert_metadata(cert):
    return {"serial_number": serial_hex(cert), "not_before": iso(cert.not_valid_before_utc),
            "not_after": iso(cert.not_valid_after_utc), "fingerprint": fingerprint(cert)}


def server_uid_of(cert):
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return names[0].value if names else None


def listen_names(host):
    """Names the server certificate must cover for `host` (plus localhost, always)."""
    names = {"localhost", "127.0.0.1", "::1"}
    if host in ("", "0.0.0.0", "::"):
        names.add(socket.gethostname())
    else:
        names.add(host)
    return names


def _san(names):
    entries = []
    for name in sorted(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


class CertificateAuthority:
    """Loads or creates `ca.crt`/`ca.key` and `server.crt`/`server.key` in `data_dir`."""

    def __init__(self, data_dir):
        self.ca_file = os.path.join(data_dir, "ca.crt")
        self._ca_key_file = os.path.join(data_dir, "ca.key")
        self.server_cert_file = os.path.join(data_dir, "server.crt")
        self.server_key_file = os.path.join(data_dir, "server.key")
        if not os.path.exists(self._ca_key_file) or not os.path.exists(self.ca_file):
            self._create_ca()
        self.key = _load_key(self._ca_key_file)
        self.cert = _load_cert(self.ca_file)
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()
        self.pin = spki_pin(self.cert)

    def _create_ca(self):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PulseUp"),
                          x509.NameAttribute(NameOID.COMMON_NAME,
                                             "PulseUp Dev CA " + uuid.uuid4().hex[:8])])
        now = _now()
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - BACKDATE).not_valid_after(now + CA_LIFETIME)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                             False, False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        _write_key(self._ca_key_file, key)
        _write_cert(self.ca_file, cert)

    def _builder(self, subject, public_key, not_before, not_after):
        ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self.cert.subject)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(not_before).not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                               critical=False))

    # Server certificate ------------------------------------------------------------------

    def ensure_server_cert(self, host):
        """Issue (or reuse) the TLS server certificate covering `host`; returns file paths."""
        wanted = listen_names(host)
        if self._server_cert_covers(wanted):
            return self.server_cert_file, self.server_key_file
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "PulseUp dev server")])
        cert = (self._builder(subject, key.public_key(), now - BACKDATE, now + SERVER_LIFETIME)
                .add_extension(_san(wanted), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        _write_key(self.server_key_file, key)
        _write_cert(self.server_cert_file, cert)
        return self.server_cert_file, self.server_key_file

    def _server_cert_covers(self, wanted):
        if not os.path.exists(self.server_cert_file) or not os.path.exists(self.server_key_file):
            return False
        cert = _load_cert(self.server_cert_file)
        if cert.not_valid_after_utc < _now() + datetime.timedelta(days=7):
            return False
        if not self._issued_by_me(cert):
            return False
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have = {str(v) for v in san.get_values_for_type(x509.IPAddress)}
        have |= set(san.get_values_for_type(x509.DNSName))
        return wanted <= have

    # Agent certificates ------------------------------------------------------------------

    def sign_agent_csr(self, csr_pem, server_uid, lifetime_s):
        """Check an agent CSR and sign it for `server_uid`; raises CertError."""
        csr = parse_csr(csr_pem)
        now = _now()
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PulseUp"),
                             x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "PulseUp Agent"),
                             x509.NameAttribute(NameOID.COMMON_NAME, server_uid)])
        not_after = now + datetime.timedelta(seconds=lifetime_s)
        cert = (self._builder(subject, csr.public_key(), min(now - BACKDATE, not_after), not_after)
                .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                             False, False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        return cert

    def _issued_by_me(self, cert):
        if cert.issuer != self.cert.subject:
            return False
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def check_agent_cert(self, cert, is_revoked):
        """Return the cert's server_uid if it chains to this CA, is inside its validity window
        and not revoked; else raise CertError with the wire error text.

        `is_revoked(serial_hex, server_uid)` is the store's revocation check.
        """
        if not self._issued_by_me(cert):
            raise CertError("Unknown certificate authority")
        now = _now()
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise CertError("Certificate expired")
        uid = server_uid_of(cert)
        if not uid:
            raise CertError("Unknown certificate authority")
        if is_revoked(serial_hex(cert), uid):
            raise CertError("Certificate revoked")
        return uid


def parse_csr(csr_pem):
    """Parse a PEM CSR; its signature must verify and its key must be Ed25519."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode() if isinstance(csr_pem, str) else csr_pem)
    except (ValueError, TypeError) as e:
        raise CertError("Invalid CSR: cannot parse") from e
    if not csr.is_signature_valid:
        raise CertError("Invalid CSR: bad signature")
    if not isinstance(csr.public_key(), ed25519.Ed25519PublicKey):
        raise CertError("Invalid CSR: key must be Ed25519")
    return csr


def load_pem_cert(pem):
    """Parse one PEM certificate; raises CertError."""
    try:
        return x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)
    except (ValueError, TypeError) as e:
        raise CertError("Invalid certificate") from e


def load_der_cert(der):
    return x509.load_der_x509_certificate(der)


def verify_ed25519(cert, signature, message):
    """True if `signature` over `message` verifies with the cert's Ed25519 key."""
    key = cert.public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey):
        return False
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True
