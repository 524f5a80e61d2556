"""Domain names, domain records and their state file ``domains.v2.json``.

Validation follows docs/commands.md, "Domains and the proxy": trimmed, lowercased, one trailing dot removed; at most
253 characters, at least two labels of 1-63 ``[a-z0-9-]`` characters not starting or ending
with ``-``, a last label that is not all digits. Everything else (wildcards, IP addresses,
ports, paths, newlines, braces) is refused before it can reach the proxy configuration.
"""

import json
import os
import re

from agent.errors import AgentError, invalid
from agent.fsutil import atomic_write

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_EMAIL_LOCAL = re.compile(r"^[^@\s]{1,64}\Z")
DEFAULT_EMAIL = "domains@pulseup.io"

# docs/commands.md, "Domains and the proxy": the spellings of redirect_www
_REDIRECTS = {"to_www": "to_www", "www": "to_www", "to_root": "to_root", "root": "to_root",
              "no_www": "to_root"}

# DomainInfo keys (docs/commands.md, "Shapes") kept in the state file; ssl mirrors managed_certificate
RECORD_KEYS = ("domain", "service_uid", "upstream_container", "port", "protocol", "force_https",
               "redirect_www", "managed_certificate", "certificate_email", "ssl", "ssl_status",
               "ssl_error", "last_applied", "last_checked")


def normalize_domain(value, field="domain"):
    """The canonical spelling of a host name; raises invalid_argument (docs/commands.md, "Domains and the proxy")."""
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in value):   # trimmed of spaces only (issue 17)
        raise invalid(field, "must not contain control characters")
    name = value.strip(" ").lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253:
        raise invalid(field, "must be a host name of at most 253 characters")
    labels = name.split(".")
    if len(labels) < 2:
        raise invalid(field, "must have at least two labels (like example.com)")
    for label in labels:
        if not _LABEL.match(label):
            raise invalid(field, f"invalid label {label[:63]!r}: 1-63 characters of a-z, 0-9 "
                          "and '-', not starting or ending with '-' (no wildcards, ports or paths)")
    if labels[-1].isdigit():
        raise invalid(field, "must be a host name, not an IP address")
    return name


def redirect_mode(value):
    """docs/commands.md, "Domains and the proxy": to_www/www, to_root/root/no_www, anything else none."""
    if isinstance(value, str):
        return _REDIRECTS.get(value.strip().lower(), "none")
    return "none"


def validate_email(value, field="email"):
    """``^[^@\\s]{1,64}@<valid domain>$``, at most 254 characters; raises invalid_argument."""
    if not isinstance(value, str) or len(value) > 254 or value.count("@") != 1:
        raise invalid(field, "must be an email address like admin@example.com")
    local, _, host = value.partition("@")
    if not _EMAIL_LOCAL.match(local):
        raise invalid(field, "must be an email address like admin@example.com")
    return f"{local}@{normalize_domain(host, field)}"


def apex_of(domain):
    return domain[4:] if domain.startswith("www.") else domain


def host_names(domain, redirect_www):
    """(canonical host, alias host or None) of a domain record.

    With ``to_www`` the canonical host is ``www.<apex>`` and the apex redirects to it; with
    ``to_root`` the reverse. Both names must pass validation (docs/commands.md, "Domains and the proxy").
    """
    if redirect_www == "none":
        return domain, None
    apex = normalize_domain(apex_of(domain))
    www = normalize_domain("www." + apex)
    return (www, apex) if redirect_www == "to_www" else (apex, www)


def hosts_of(record):
    canonical, alias = host_names(record["domain"], record["redirect_www"])
    return [canonical] + ([alias] if alias else [])


def find_conflict(records, candidate):
    """The record (other than the candidate's own) that already serves one of its host names."""
    wanted = set(hosts_of(candidate))
    for record in records:
        if record["domain"] != candidate["domain"] and wanted & set(hosts_of(record)):
            return record
    return None


class DomainStore:
    """``STATE_DIR/caddy/domains.v2.json``: a sorted array of domain records (0600, atomic)."""

    def __init__(self, path):
        self.path = path

    def load(self):
        """The records as a list of dicts; raises failed_precondition when unreadable."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise AgentError("failed_precondition", f"cannot read {self.path}: {exc}") from exc
        if not isinstance(data, list):
            raise AgentError("failed_precondition", f"{self.path}: expected a JSON array")
        return [dict(record) for record in data if isinstance(record, dict) and "domain" in record]

    def save(self, records):
        """Write the records sorted by domain; raises failed_precondition when unwritable."""
        ordered = sorted(records, key=lambda r: r["domain"])
        clean = [{k: r.get(k) for k in RECORD_KEYS if r.get(k) is not None} for r in ordered]
        write_atomic(self.path, json.dumps(clean, indent=1, sort_keys=True).encode())


def write_atomic(path, data, mode=0o600):
    """docs/commands.md, "Paths and files" through agent.fsutil; failed_precondition when the directory is
    not writable (docs/design.md, "Settings and files")."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        atomic_write(path, data, mode)
    except OSError as exc:
        raise AgentError("failed_precondition", f"cannot write {path}: {exc.strerror}") from exc
