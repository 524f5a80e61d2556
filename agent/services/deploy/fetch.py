"""``service.deploy.logs.fetch`` (docs/commands.md, "Logs and stats"): the tail of a deployment's logs, its steps and
the output of the container it created, within the 512 KiB frame limit.

Files are read backwards in blocks from their end, so a large log never sits whole in memory;
the oldest lines are dropped to fit and ``truncated`` is set.
"""

import os
from datetime import datetime, timezone

from agent.errors import AgentError, invalid
from agent.services.deploy.logs import log_path, read_steps, steps_path
from agent.services.docker import DEPLOYMENT_UID, MANAGED, SERVICE_UID, translate
from agent.services.app.logs import parse_since

BLOCK = 64 * 1024
LOG_BUDGET = 160 * 1024          # `logs` and `deployment_logs` carry the same text
CONTAINER_BUDGET = 64 * 1024
MAX_LINES = 10000


def tail_lines(path, count, budget=LOG_BUDGET):
    """(last ``count`` lines of ``path`` (all when None), truncated) within ``budget`` bytes."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return [], False
    with handle:
        end = handle.seek(0, os.SEEK_END)
        data, position = b"", end
        while position > 0 and len(data) < budget and (count is None or data.count(b"\n") <= count):
            step = min(BLOCK, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
    lines = data.decode("utf-8", "replace").splitlines()
    partial = position > 0          # the first line read may be cut: drop it
    if partial:
        lines = lines[1:]
    truncated = False
    while lines and sum(len(line) + 1 for line in lines) > budget:
        lines, truncated = lines[1:], True
    if count is not None and len(lines) > count:
        lines = lines[-count:]
    elif partial:                   # fewer lines than asked for: the budget cut them
        truncated = True
    return lines, truncated


def line_time(line):
    """Epoch seconds of a log line's leading RFC 3339 timestamp, or None."""
    stamp = line.split(" - ", 1)[0]
    try:
        return datetime.strptime(stamp[:26].rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f").replace(
            tzinfo=timezone.utc).timestamp()
    except ValueError:
        try:
            return datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            return None


def line_count(lines):
    """The ``lines`` rule: 0 -> 100, positive capped at 10000, negative -> all (None)."""
    if lines == 0:
        return 100
    return None if lines < 0 else min(lines, MAX_LINES)


def fetch(cfg, docker, service_uid, deployment_uid, lines=100, since=None, log_type="build"):
    """The reply data; raises not_found (unknown deployment), invalid_argument (``since``)."""
    log_dir = cfg.deployment_log_dir
    types = ("build", "deploy") if log_type == "all" else (log_type,)
    known = [t for t in ("build", "deploy") if os.path.exists(log_path(log_dir, deployment_uid, t))]
    if not known and not os.path.exists(steps_path(log_dir, deployment_uid)):
        raise AgentError("not_found", f"deployment {deployment_uid} not found")
    count = line_count(lines)
    threshold = _since(since)
    collected, truncated = [], False
    for kind in types:
        part, cut = tail_lines(log_path(log_dir, deployment_uid, kind), count, LOG_BUDGET // len(types))
        collected += part
        truncated = truncated or cut
    if threshold is not None:
        collected = [line for line in collected if (line_time(line) or threshold + 1) > threshold]
    if count is not None and len(collected) > count:
        collected, truncated = collected[-count:], True
    text = "\n".join(collected)
    return {"service_uid": service_uid, "deployment_uid": deployment_uid, "logs": text, "deployment_logs": text,
            "container_logs": container_logs(docker, service_uid, deployment_uid, count or MAX_LINES),
            "log_type": log_type, "lines_returned": len(collected), "steps": read_steps(log_dir, deployment_uid),
            "truncated": truncated}


def _since(since):
    if since in (None, ""):
        return None
    try:
        return parse_since(since)
    except ValueError as exc:
        raise invalid("since", str(exc)) from None


def container_logs(docker, service_uid, deployment_uid, count):
    """The last ``count`` lines of the container this deployment created, or ""."""
    try:
        found = docker.list_containers([f"{MANAGED}=true", f"{SERVICE_UID}={service_uid}",
                                        f"{DEPLOYMENT_UID}={deployment_uid}"])
        if not found:
            return ""
        with translate("container logs"):
            text = found[0].logs(tail=count).decode("utf-8", "replace")
    except AgentError:
        return ""
    return text[-CONTAINER_BUDGET:]
