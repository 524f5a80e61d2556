"""Signed update manifests (docs/operations.md, "Self-update"): pure checks shared by worker and supervisor.

A manifest is the JSON object ``{"version", "url", "size", "sha256",
"published_at", "changelog"}``; ``<manifest>.sig`` is a base64 Ed25519
signature over the manifest's exact bytes. The worker checks it before
reporting or downloading anything; the supervisor checks it again on its own
root-owned copy with its own root-owned key before installing.
"""

import base64
import binascii
import json
import os
import re
import stat

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from marshmallow import EXCLUDE, Schema, ValidationError, validate

from agent.errors import AgentError
from agent.protocol.fields import StrictInteger, StrictString

MAX_MANIFEST_BYTES = 64 * 1024
# docs/design.md, "Versions": X.Y.Z on the wire, a leading v accepted; .devN builds are not semantic.
_SEMVER = re.compile(r"^v?(\d{1,6})\.(\d{1,6})\.(\d{1,6})\Z")


class ManifestSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    version = StrictString(required=True, validate=validate.Regexp(_SEMVER))
    url = StrictString(required=True, validate=validate.Regexp(r"^https?://[^\s]+\.deb\Z"))
    size = StrictInteger(required=True, validate=validate.Range(min=1, max=1024**3))
    sha256 = StrictString(required=True, validate=validate.Regexp(r"^[0-9a-f]{64}\Z"))
    published_at = StrictString(load_default=None)
    changelog = StrictString(load_default="")


def parse_version(text):
    """(X, Y, Z) for a semantic version (leading v allowed), None for anything else."""
    match = _SEMVER.match(text or "")
    return tuple(int(part) for part in match.groups()) if match else None


def normalize(text):
    """'v1.2.3' -> '1.2.3'; raises AgentError(invalid_argument) when not semantic."""
    parsed = parse_version(text)
    if parsed is None:
        raise AgentError("invalid_argument", f"not a version X.Y.Z: {text!r}", field="version")
    return "%d.%d.%d" % parsed


def load_public_key(path, require_root=False):
    """The Ed25519 key in ``path`` (PEM, or base64 of the 32 raw bytes).

    Raises AgentError(failed_precondition) when missing, unreadable, not
    Ed25519, or (require_root) not owned by root or writable by others.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            data = handle.read(MAX_MANIFEST_BYTES)
    except OSError as exc:
        raise AgentError("failed_precondition", f"update key {path}: {exc.strerror}") from None
    if require_root and (info.st_uid != 0 or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
        raise AgentError("failed_precondition", f"update key {path} must be owned by root and not writable by others")
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_public_key(data)
        else:
            key = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip(), validate=True))
    except (ValueError, binascii.Error, TypeError) as exc:
        raise AgentError("failed_precondition", f"update key {path}: not an Ed25519 key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise AgentError("failed_precondition", f"update key {path}: not an Ed25519 key")
    return key


def verify_manifest(manifest_bytes, signature_text, public_key):
    """The manifest dict once its signature verifies; raises AgentError(integrity_error)."""
    if len(manifest_bytes) > MAX_MANIFEST_BYTES:
        raise AgentError("integrity_error", "update manifest is too large")
    try:
        signature = base64.b64decode(signature_text.strip(), validate=True)
        public_key.verify(signature, manifest_bytes)
    except (binascii.Error, ValueError, InvalidSignature):
        raise AgentError("integrity_error", "update manifest signature does not verify") from None
    try:
        document = json.loads(manifest_bytes)
        manifest = ManifestSchema().load(document if isinstance(document, dict) else {})
    except (ValueError, ValidationError) as exc:
        raise AgentError("integrity_error", f"signed update manifest is malformed: {exc}") from None
    manifest["version"] = normalize(manifest["version"])
    return manifest


def sign(manifest_bytes, private_key):
    """The .sig text for ``manifest_bytes`` (release tooling and tests)."""
    return base64.b64encode(private_key.sign(manifest_bytes)).decode() + "\n"
