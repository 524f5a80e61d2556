"""Retention of scheduled backups (docs/commands.md, "Databases").

A file is deleted only when all of these hold: its name is ``backup_<ts>[-n].<ext>.<zst|gz>``;
its sidecar manifest exists, parses and names this ``service_uid`` (and this file);
the manifest's ``created_at`` is older than ``retention_days``; it is not the newest
completed backup of the service (across every directory looked at); and it is not pinned
(being uploaded or restored). The file and its manifest go together. Legacy files (no
manifest) and foreign files (another service's, or any other name) are never touched.
"""

import os
import time
from datetime import datetime

from agent import log
from agent.services.backups import manifest as mf

DAY = 86400.0
_log = log.get("backups.retention")


def created_epoch(entry):
    """The manifest's ``created_at`` as Unix seconds, None when it does not parse."""
    try:
        moment = datetime.fromisoformat(entry["created_at"])
    except (TypeError, ValueError):
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


def candidates(directories, service_uid, retention_days, pinned=frozenset(), now=None):
    """Paths that retention may delete, oldest first; pure (reads directories only)."""
    if retention_days <= 0:
        return []
    now = time.time() if now is None else now
    entries = []
    for directory in dict.fromkeys(directories):      # each directory once, in order
        found, _legacy = mf.scan(directory, service_uid)
        entries.extend(e for e in found if created_epoch(e) is not None)
    if not entries:
        return []
    newest = max(entries, key=lambda e: (created_epoch(e), e["file_name"]))["backup_uid"]
    limit = now - retention_days * DAY
    doomed = [e for e in entries if e["backup_uid"] != newest and created_epoch(e) < limit
              and os.path.realpath(e["backup_path"]) not in pinned]
    return [e["backup_path"] for e in sorted(doomed, key=created_epoch)]


def apply(directories, service_uid, retention_days, pinned=frozenset(), now=None):
    """Delete what :func:`candidates` names; returns the deleted paths. A file that cannot
    be deleted is logged and skipped (retention never fails a backup run)."""
    deleted = []
    for path in candidates(directories, service_uid, retention_days, pinned, now):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            _log.warning("retention: cannot delete %s: %s", path, exc.strerror)
            continue
        try:
            os.unlink(path + ".json")
        except OSError:
            pass
        deleted.append(path)
        _log.info("retention: deleted %s", path)
    for directory in {os.path.dirname(p) for p in deleted}:
        try:
            mf.fsync_dir(directory)
        except OSError:
            pass
    return deleted
