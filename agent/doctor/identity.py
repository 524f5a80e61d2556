"""Doctor checks of the configuration and of the agent's certificate in CERT_DIR."""

import datetime
import os
from urllib.parse import urlsplit

from agent.doctor.report import failed, passed
from agent.values import rfc3339

KEY_FILE, CERT_FILE, CA_FILE = "agent.key", "agent.crt", "ca.crt"
ENROLL_HINT = ("enroll this host: put a fresh JOIN_TOKEN in the config and restart the agent, "
               "or run `pulseup-agent enroll --join-token-file FILE`")


def check_config(findings):
    cfg = findings.cfg
    problems = []
    if not cfg.websocket_url:
        problems.append("WEBSOCKET_URL is not set")
    insecure = [name for name, url in (("WEBSOCKET_URL", cfg.websocket_url), ("API_BASE_URL", cfg.api_base_url))
                if url and urlsplit(url).scheme in ("ws", "http")]
    if insecure and not cfg.allow_insecure_transport:
        problems.append(f"{' and '.join(insecure)} use plain ws:// or http:// without ALLOW_INSECURE_TRANSPORT")
    if cfg.enroll_ca_pin and cfg.enroll_ca_file:
        problems.append("ENROLL_CA_PIN and ENROLL_CA_FILE are both set")
    if problems:
        return failed("config", "; ".join(problems),
                      "fix the config file (`pulseup-agent check-config` shows every value and its source)")
    detail = f"loaded; control plane {cfg.websocket_url}"
    if cfg.warnings:
        detail += f"; {len(cfg.warnings)} warning(s): " + "; ".join(cfg.warnings)
    return passed("config", detail)


def check_certificate(findings):
    cfg = findings.cfg
    paths = {name: os.path.join(cfg.cert_dir, name) for name in (KEY_FILE, CERT_FILE, CA_FILE)}
    try:
        os.listdir(cfg.cert_dir)        # a directory this user cannot search hides every file in it
        missing = [name for name, path in paths.items() if not os.path.exists(path)]
        if len(missing) == len(paths):
            return failed("certificate", f"not enrolled: no {', '.join(missing)} in {cfg.cert_dir}", ENROLL_HINT)
        if missing:
            return failed("certificate", f"{', '.join(missing)} missing in {cfg.cert_dir}", ENROLL_HINT)
        key, cert, cas = _load(paths)
    except FileNotFoundError:
        return failed("certificate", f"not enrolled: {cfg.cert_dir} does not exist", ENROLL_HINT)
    except PermissionError as exc:
        return failed("certificate", f"cannot read {exc.filename}: permission denied",
                      "run the doctor as root or as WORKER_USER")
    except (OSError, ValueError) as exc:
        return failed("certificate", f"unreadable key or certificate in {cfg.cert_dir}: {exc}", ENROLL_HINT)
    return _judge(cert, key, cas, paths)


def _load(paths):
    """(key, cert, [ca certs]); raises OSError or ValueError (with a short reason)."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    with open(paths[KEY_FILE], "rb") as handle:
        key_pem = handle.read()
    with open(paths[CERT_FILE], "rb") as handle:
        cert_pem = handle.read()
    with open(paths[CA_FILE], "rb") as handle:
        ca_pem = handle.read()
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"{KEY_FILE} is not a PEM private key") from exc
    try:
        cert = x509.load_pem_x509_certificates(cert_pem)[0]
        cas = x509.load_pem_x509_certificates(ca_pem)
    except (ValueError, IndexError) as exc:
        raise ValueError(f"{CERT_FILE} or {CA_FILE} is not a PEM certificate") from exc
    return key, cert, cas


def _judge(cert, key, cas, paths):
    if not _matches(cert, key):
        return failed("certificate", f"{CERT_FILE} does not belong to {KEY_FILE} (key mismatch)",
                      "a key or certificate was replaced by hand; restore the pair or " + ENROLL_HINT)
    if not any(_issued_by(cert, ca) for ca in cas):
        return failed("certificate", f"{CERT_FILE} (issuer {cert.issuer.rfc4514_string()}) does not chain to "
                      f"the CA in {paths[CA_FILE]}",
                      "the certificate comes from another control plane or CA; " + ENROLL_HINT)
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < not_before:
        return failed("certificate", f"not valid before {_iso(not_before)}; this host's clock says {_iso(now)}",
                      "set the clock (enable NTP: `timedatectl set-ntp true`)")
    if now >= not_after:
        return failed("certificate", f"expired on {_iso(not_after)}",
                      "an expired certificate cannot be renewed; " + ENROLL_HINT)
    days = (not_after - now).total_seconds() / 86400
    return passed("certificate", f"valid, matches the key, chains to the CA; expires {_iso(not_after)} "
                  f"(in {days:.1f} days)")


def _matches(cert, key):
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        return cert.public_key().public_bytes(*der) == key.public_key().public_bytes(*der)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False


def _issued_by(cert, ca):
    from agent.worker.identity import issued_by    # the worker's own check, loaded when needed
    return issued_by(cert, ca)


def _iso(moment):
    return rfc3339(moment.timestamp(), precision="s")


CHECKS = [("config", check_config), ("certificate", check_certificate)]
