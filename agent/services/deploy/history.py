"""Build history and build plans under ``DEPLOYMENT_DIR/<service_uid>/`` (docs/commands.md, "Paths and files" and "Deployments").

``build_history.json`` keeps the last 10 successful builds, newest first; an older entry
with the same image is replaced. ``build_plan.json`` caches what ``service.app.install``
prepared. Both are written atomically (temp file, fsync, rename, fsync dir).
"""

import json
import os
import shutil

from agent.errors import AgentError
from agent.fsutil import atomic_write

MAX_ENTRIES = 10
HISTORY_KEYS = ("success", "image_name", "build_time", "commit_sha", "commit_message", "deployment_uid",
                "deployed_at", "deployment_method", "port_mappings", "cpu_limit", "memory_limit",
                "health_check_path")


class BuildHistory:
    """Raises failed_precondition when the directory cannot be written."""

    def __init__(self, deployment_dir):
        self.root = deployment_dir

    def _dir(self, service_uid):
        return os.path.join(self.root, service_uid)

    def _path(self, service_uid, name):
        return os.path.join(self._dir(service_uid), name)

    def load(self, service_uid):
        """The entries, newest first ([] when none or unreadable)."""
        data = _read_json(self._path(service_uid, "build_history.json"))
        return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []

    def record(self, service_uid, entry):
        """Put ``entry`` first, drop an older entry of the same image, keep 10."""
        entry = {key: entry.get(key) for key in HISTORY_KEYS}
        entries = [e for e in self.load(service_uid) if e.get("image_name") != entry["image_name"]]
        entries = [entry, *entries][:MAX_ENTRIES]
        self._write(service_uid, "build_history.json", entries)
        return entries

    def save_plan(self, service_uid, plan):
        self._write(service_uid, "build_plan.json", plan)

    def load_plan(self, service_uid):
        plan = _read_json(self._path(service_uid, "build_plan.json"))
        return plan if isinstance(plan, dict) else None

    def remove(self, service_uid):
        """Delete history and plan (purge_files); True when something was removed."""
        path = self._dir(service_uid)
        if not os.path.isdir(path):
            return False
        shutil.rmtree(path)
        return True

    def _write(self, service_uid, name, value):
        directory = self._dir(service_uid)
        try:
            os.makedirs(directory, mode=0o750, exist_ok=True)
            atomic_write(os.path.join(directory, name), json.dumps(value, indent=1).encode(), mode=0o640)
        except OSError as exc:
            raise AgentError("failed_precondition", f"cannot write {directory}: {exc.strerror}") from exc


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None
