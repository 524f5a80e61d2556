"""Deployment logs and the step timeline (docs/commands.md, "Paths and files";
DeploymentStep in "Shapes").

Per deployment: ``<deployment_uid>_build.log`` / ``_deploy.log`` (append-only, line format
``<RFC 3339 UTC> - <LEVEL> - <text>``) and ``<deployment_uid>_steps.json`` (the whole array,
rewritten atomically on every change). Each line also goes to the service-scoped copy
``<service_uid>_<type>.log``, rotated at 10 MiB with 3 generations. Every line is redacted
(docs/design.md, "Logging and secrets") before it reaches a file.
"""

import json
import os
import threading

from agent import log
from agent.errors import AgentError
from agent.fsutil import atomic_write
from agent.values import rfc3339

LOG_TYPES = ("build", "deploy")
LEVELS = ("INFO", "WARN", "ERROR")
SERVICE_LOG_MAX = 10 * 1024 * 1024
SERVICE_LOG_GENERATIONS = 3
STEP_LOG_LIMIT = 200          # log entries kept inside one step of the steps file
STEP_NAMES = {
    "initialize": "Initialize deployment", "fetch_source": "Fetch source code",
    "build_image": "Build image", "deploy_container": "Deploy container",
    "health_check": "Health check", "switch_traffic": "Switch traffic", "cleanup": "Cleanup",
}


def format_line(text, level="INFO", epoch=None):
    """One deployment log line, redacted, without the newline."""
    return f"{rfc3339(epoch)} - {level} - {log.redact(text)}"


def log_path(log_dir, owner_uid, log_type):
    return os.path.join(log_dir, f"{owner_uid}_{log_type}.log")


def steps_path(log_dir, deployment_uid):
    return os.path.join(log_dir, f"{deployment_uid}_steps.json")


def ensure_dir(path, mode=0o750):
    """Create ``path``; an unwritable directory fails the command (docs/design.md, "Settings and files")."""
    try:
        os.makedirs(path, mode=mode, exist_ok=True)
    except OSError as exc:
        raise AgentError("failed_precondition", f"cannot create {path}: {exc.strerror}") from exc


class DeploymentLog:
    """Appends lines to one deployment's logs and the service-scoped copies."""

    def __init__(self, log_dir, service_uid, deployment_uid):
        ensure_dir(log_dir)
        self.log_dir = log_dir
        self.service_uid = service_uid
        self.deployment_uid = deployment_uid
        self._lock = threading.Lock()

    def path(self, log_type):
        return log_path(self.log_dir, self.deployment_uid, log_type)

    def write(self, log_type, text, level="INFO"):
        """Append ``text`` (one or more lines) at ``level`` to the ``log_type`` logs."""
        level = level if level in LEVELS else "INFO"
        lines = text.splitlines() or [""]
        data = "".join(format_line(line, level) + "\n" for line in lines).encode("utf-8", "replace")
        with self._lock:
            _append(self.path(log_type), data)
            service_copy = log_path(self.log_dir, self.service_uid, log_type)
            if service_copy != self.path(log_type):
                _rotate_if_large(service_copy, len(data))
                _append(service_copy, data)

    def build(self, text, level="INFO"):
        self.write("build", text, level)

    def deploy(self, text, level="INFO"):
        self.write("deploy", text, level)


def _append(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _rotate_if_large(path, incoming):
    try:
        size = os.path.getsize(path)
    except OSError:
        return
    if size + incoming <= SERVICE_LOG_MAX:
        return
    for generation in range(SERVICE_LOG_GENERATIONS - 1, 0, -1):
        older = f"{path}.{generation}"
        if os.path.exists(older):
            os.replace(older, f"{path}.{generation + 1}")
    os.replace(path, f"{path}.1")
    stale = f"{path}.{SERVICE_LOG_GENERATIONS + 1}"
    if os.path.exists(stale):
        os.unlink(stale)


class Steps:
    """The DeploymentStep timeline of one deployment, persisted on every change."""

    def __init__(self, log_dir, deployment_uid, dlog=None):
        ensure_dir(log_dir)
        self.path = steps_path(log_dir, deployment_uid)
        self.dlog = dlog
        self.steps = []

    def _find(self, step_id):
        for step in self.steps:
            if step["id"] == step_id:
                return step
        return None

    def start(self, step_id, description=None, log_type=None):
        step = self._find(step_id)
        if step is None:
            step = {"id": step_id, "name": STEP_NAMES.get(step_id, step_id)}
            self.steps.append(step)
        step.update(status="running", started_at=rfc3339(), logs=[])
        step.pop("completed_at", None)
        step.pop("error", None)
        if description:
            step["description"] = description
        if log_type:
            step["log_type"] = log_type
        self._save()
        return step

    def log(self, step_id, message, level="INFO"):
        """Add a log entry to a step (and to the step's deployment log, if any)."""
        step = self._find(step_id) or self.start(step_id)
        entry = {"timestamp": rfc3339(), "level": level, "message": log.redact(message)}
        step["logs"] = (step.get("logs") or [])[-(STEP_LOG_LIMIT - 1):] + [entry]
        if self.dlog is not None:
            self.dlog.write(step.get("log_type") or "deploy", message, level)
        self._save()

    def finish(self, step_id, status="success", error=None, metadata=None):
        step = self._find(step_id) or self.start(step_id)
        step.update(status=status, completed_at=rfc3339())
        if error:
            step["error"] = log.redact(error)
        if metadata:
            step["metadata"] = {**step.get("metadata", {}), **metadata}
        self._save()

    def fail_running(self, error):
        """Mark every running step as failed (the deployment ended early)."""
        for step in self.steps:
            if step.get("status") == "running":
                self.finish(step["id"], "error", error)

    def _save(self):
        atomic_write(self.path, json.dumps(self.steps).encode(), mode=0o640)


def read_steps(log_dir, deployment_uid):
    """The steps array of a deployment ([] when there is none)."""
    try:
        with open(steps_path(log_dir, deployment_uid), encoding="utf-8") as handle:
            steps = json.load(handle)
    except (OSError, ValueError):
        return []
    return steps if isinstance(steps, list) else []
