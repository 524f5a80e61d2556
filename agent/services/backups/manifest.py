"""Backup files on disk: names, the JSON manifest sidecar, atomic writes, listing.

Names and modes follow docs/commands.md, "Paths and files" (``backup_<YYYYMMDDTHHMMSSZ>[-n].<ext>.<zst|gz>``,
dir 0700, files 0600, each written under a temporary name, fsynced, renamed, directory
fsynced); the manifest is the BackupManifest of docs/commands.md, "Shapes" and "Databases", and the
listing entries are BackupEntry objects.
"""

import json
import os
import re
import secrets
import time

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from agent import values
from agent.fsutil import fsync_dir  # noqa: F401 (used by the backup pipeline too)
from agent.fsutil import atomic_write, unlink_quietly
from agent.services.database.engines import ENGINE_NAMES, ENTRY_TYPE, FORMAT_EXT

CODEC_SUFFIX = {"zstd": "zst", "gzip": "gz"}
BACKUP_NAME = re.compile(r"^backup_(\d{8}T\d{6}Z)(-\d+)?\.(dump|sql|rdb|archive)\.(zst|gz)\Z")
LEGACY_SUFFIXES = (".sql", ".rdb", ".archive")
LEGACY_TYPE = {".sql": "sql", ".rdb": "redis", ".archive": "mongodb"}


class ManifestSchema(Schema):
    """BackupManifest (docs/commands.md, "Shapes"); extra keys such as ``warnings`` are kept out."""

    class Meta:
        unknown = EXCLUDE

    manifest_version = fields.Integer(required=True, validate=validate.Equal(1))
    backup_uid = fields.String(required=True)
    service_uid = fields.String(required=True)
    engine = fields.String(required=True, validate=validate.OneOf(ENGINE_NAMES))
    engine_version = fields.String(load_default="")
    image = fields.String(load_default="")
    database = fields.String(required=True)
    format = fields.String(required=True, validate=validate.OneOf(sorted(FORMAT_EXT)))
    compression = fields.String(required=True, validate=validate.OneOf(sorted(CODEC_SUFFIX)))
    file_name = fields.String(required=True)
    size = fields.Integer(required=True, validate=validate.Range(min=0))
    compressed_size = fields.Integer(required=True, validate=validate.Range(min=0))
    sha256 = fields.String(required=True, validate=validate.Regexp(r"^[0-9a-f]{64}\Z"))
    created_at = fields.String(required=True)
    completed_at = fields.String(load_default="")
    backup_type = fields.String(load_default="manual")
    created_by = fields.String(load_default="")
    warnings = fields.List(fields.String(), load_default=list)


_SCHEMA = ManifestSchema()


def rfc3339(epoch=None):
    """UTC RFC 3339 with millisecond precision and a Z suffix (docs/commands.md, "Time and sizes")."""
    return values.rfc3339(epoch, precision="ms")


def stamp(epoch):
    """The ``YYYYMMDDTHHMMSSZ`` part of a backup name."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def file_name(ts, fmt, compression, n=1):
    """``backup_<ts>[-n].<ext>.<codec>``; ``n`` > 1 only after a name collision."""
    suffix = "" if n == 1 else f"-{n}"
    return f"backup_{ts}{suffix}.{FORMAT_EXT[fmt]}.{CODEC_SUFFIX[compression]}"


def temp_name(final_name):
    return f".{final_name}.partial-{secrets.token_hex(6)}"


PARTIAL_NAME = re.compile(r"^\.backup_.+\.partial-[0-9a-f]{12}\Z")


def discard_partials(directory):
    """Delete the temporary files (``temp_name``) of backups killed with their process;
    returns their names. Only safe while nothing writes into ``directory``: the worker
    calls it at start-up for the services whose backup a restart interrupted (issue 13:
    no half-written file stays behind). OSError other than a missing directory propagates."""
    try:
        names = [name for name in os.listdir(directory) if PARTIAL_NAME.match(name)]
    except FileNotFoundError:
        return []
    for name in names:
        unlink_quietly(os.path.join(directory, name))
    return names


def ensure_dir(path):
    """Create ``path`` (0700) and its parents; OSError when impossible."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


def write_json_atomic(path, obj):
    """Write ``obj`` to ``path`` (0600) under a partial name, fsynced and renamed; OSError."""
    data = json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n"
    atomic_write(path, data, 0o600, temp_name=temp_name)


def publish(tmp_path, directory, ts, fmt, compression):
    """Link the finished temporary file to the first free final name (never overwriting:
    link(2) fails on an existing name), drop the temporary name, fsync; returns the name."""
    for n in range(1, 10_000):
        name = file_name(ts, fmt, compression, n)
        try:
            os.link(tmp_path, os.path.join(directory, name))
        except FileExistsError:
            continue
        os.unlink(tmp_path)
        fsync_dir(directory)
        return name
    raise FileExistsError(f"no free backup name for {ts}")


def load_manifest(path):
    """The manifest at ``path`` as a dict, or None when missing or invalid."""
    try:
        with open(path, "rb") as handle:
            raw = json.loads(handle.read(1 << 20))
        return _SCHEMA.load(raw)
    except (OSError, ValueError, ValidationError, TypeError):
        return None


def scan(directory, service_uid):
    """(manifest entries, legacy entries) of one service's backup dir, unsorted."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return [], []
    entries, legacy = [], []
    for name in names:
        if name.startswith("."):
            continue  # temporary and partial files (docs/commands.md, "Databases", backup.list)
        path = os.path.join(directory, name)
        if BACKUP_NAME.match(name):
            manifest = load_manifest(path + ".json")
            if manifest and manifest["service_uid"] == service_uid and manifest["file_name"] == name \
                    and os.path.isfile(path):
                entries.append(_entry(path, manifest))
        elif name.endswith(LEGACY_SUFFIXES) and os.path.isfile(path) \
                and not os.path.exists(path + ".json"):
            legacy.append(_legacy_entry(path, service_uid))
    return entries, legacy


def list_entries(directory, service_uid):
    """BackupEntry dicts, newest first (docs/commands.md, "Databases" ``database.backup.list``)."""
    entries, legacy = scan(directory, service_uid)
    return sorted(entries + legacy, key=lambda e: (e["created_at"], e["file_name"]), reverse=True)


def _entry(path, manifest):
    return {
        "backup_uid": manifest["backup_uid"], "backup_path": path,
        "file_name": manifest["file_name"], "database": manifest["service_uid"],
        "database_name": manifest["database"], "type": ENTRY_TYPE[manifest["engine"]],
        "engine": manifest["engine"], "format": manifest["format"], "size": manifest["size"],
        "compressed_size": manifest["compressed_size"], "sha256": manifest["sha256"],
        "created_at": manifest["created_at"], "backup_type": manifest["backup_type"],
        "legacy": False,
    }


def _legacy_entry(path, service_uid):
    stat = os.stat(path)
    suffix = os.path.splitext(path)[1]
    return {"backup_path": path, "file_name": os.path.basename(path), "database": service_uid,
            "type": LEGACY_TYPE[suffix], "compressed_size": stat.st_size,
            "created_at": rfc3339(stat.st_mtime), "legacy": True}


def find_by_uid(directory, service_uid, backup_uid):
    """Path of the backup whose manifest has ``backup_uid``, or None."""
    entries, _ = scan(directory, service_uid)
    for entry in entries:
        if entry["backup_uid"] == backup_uid:
            return entry["backup_path"]
    return None
