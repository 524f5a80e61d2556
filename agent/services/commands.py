"""The whitelisted host actions of ``agent.command.execute`` (docs/commands.md, "Agent commands").

Each entry says how it runs: as an argument list in the worker (no shell; output capped,
process group killed on timeout or cancel), through the Docker SDK, or as an allow-listed
supervisor op over the IPC (privileged actions, docs/protocol.md, "Supervisor IPC"). Nothing here builds a
command line from request data: ``args`` of the request is accepted and ignored.
"""

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field

import gevent

from agent import log, proc
from agent.errors import AgentError
from agent.protocol.ipc import (
    OP_DISK_CLEANUP_LOGS, OP_DISK_CLEANUP_TEMP, OP_SERVICE_RESTART, OP_SYSTEM_REBOOT, OP_SYSTEM_SHUTDOWN,
    OP_SYSTEM_UPDATE_PACKAGES)
from agent.services.docker import MANAGED, translate
from agent.values import rfc3339

OUTPUT_CAP = proc.OUTPUT_CAP
DEFAULT_TIMEOUT = 300.0
RESTART_DELAY = 1.0        # agent.restart: let the reply leave first
DATABASE_VOLUMES = "pulseup.component=database"

_log = log.get("commands")


@dataclass(frozen=True)
class Entry:
    id: str
    name: str
    description: str
    category: str
    requires_confirmation: bool
    kind: str                       # supervisor | argv | sdk | refuse | restart_agent
    op: str = ""                    # supervisor op, or the name of an sdk action
    op_args: dict = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT


WHITELIST = {e.id: e for e in (
    Entry("system.reboot", "Reboot server", "Reboot the host through the service manager",
          "system", True, "supervisor", OP_SYSTEM_REBOOT),
    Entry("system.shutdown", "Shut down server", "Power off the host", "system", True,
          "supervisor", OP_SYSTEM_SHUTDOWN),
    Entry("system.update_packages", "Update packages",
          "Refresh the package index, then upgrade non-interactively", "system", True,
          "supervisor", OP_SYSTEM_UPDATE_PACKAGES, timeout=1800.0),
    Entry("docker.list_all", "List containers", "Table of all containers: ID, name, status, image",
          "docker", False, "argv", "list_all"),
    Entry("docker.prune_images", "Prune images",
          "Remove all unused images (includes rollback images not used by a container)",
          "docker", True, "sdk", "prune_images"),
    Entry("docker.prune_volumes", "Prune volumes",
          "Remove unused volumes, never PulseUp database volumes", "docker", True, "sdk", "prune_volumes"),
    Entry("docker.system_prune", "System prune",
          "Remove unused containers, images, networks, build cache and volumes, never PulseUp "
          "database volumes", "docker", True, "sdk", "system_prune"),
    Entry("service.restart_caddy", "Restart proxy", "Restart the PulseUp proxy container",
          "service", False, "sdk", "restart_caddy"),
    Entry("service.restart_docker", "Restart Docker", "Restart the Docker daemon", "service", True,
          "supervisor", OP_SERVICE_RESTART, {"unit": "docker"}),
    Entry("disk.cleanup_logs", "Clean up old logs",
          "Delete *.log under /var/log older than 30 days, except /var/log/pulseup", "disk", False,
          "supervisor", OP_DISK_CLEANUP_LOGS),
    Entry("disk.cleanup_temp", "Clean up temporary files",
          "Delete files under /tmp not accessed for 7 days", "disk", False, "supervisor", OP_DISK_CLEANUP_TEMP),
    Entry("agent.update", "Update agent", "Use agent.update.apply instead", "agent", True, "refuse"),
    Entry("agent.restart", "Restart agent",
          "Restart the agent's own units through the service manager (the reply is sent first)",
          "agent", False, "restart_agent"),
)}


def describe(entry, with_category=True):
    row = {"id": entry.id, "name": entry.name, "description": entry.description,
           "requires_confirmation": entry.requires_confirmation}
    if with_category:
        row["category"] = entry.category
    return row


def catalogue():
    """agent.command.list's reply: the whitelist sorted by id."""
    entries = [WHITELIST[key] for key in sorted(WHITELIST)]
    by_category = {}
    for entry in entries:
        by_category.setdefault(entry.category, []).append(describe(entry, with_category=False))
    return {"commands": [describe(e) for e in entries], "commands_by_category": by_category,
            "total_commands": len(entries)}


def refuse_if_disabled(cfg, *names):
    """docs/protocol.md, "Supervisor IPC": PULSEUP_DISABLED_COMMANDS refuses commands and ops locally."""
    for name in names:
        if name in (cfg.pulseup_disabled_commands or ()):
            raise AgentError("permission_denied", f"{name} is disabled on this host (PULSEUP_DISABLED_COMMANDS)")


def require_ipc(services):
    if services.ipc is None:
        raise AgentError("unavailable", "supervisor is not reachable")
    return services.ipc


class CommandRunner:
    """Runs one whitelisted action for a call (see the module docstring)."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.services, self.cfg = ctx.services, ctx.services.cfg

    def execute(self, command_id, confirm=False):
        """Run ``command_id``; raises not_found, permission_denied, failed_precondition,
        unavailable, command_failed (with the reply fields), deadline_exceeded, cancelled."""
        entry = WHITELIST.get(command_id)
        if entry is None:
            raise AgentError("not_found", f"unknown command: {command_id}", field="command_id")
        refuse_if_disabled(self.cfg, "agent.command.execute", command_id)
        if entry.requires_confirmation and not confirm:
            raise AgentError("failed_precondition", f"{command_id} requires confirm: true", field="confirm")
        started = time.monotonic()
        output, error, exit_code = getattr(self, f"_run_{entry.kind}")(entry)
        reply = {"output": output, "error": error, "timestamp": rfc3339(), "exit_code": exit_code,
                 "duration_seconds": round(time.monotonic() - started, 3)}
        if exit_code != 0:
            summary = (log.redact(error).strip().splitlines() or [f"exit code {exit_code}"])[-1][:200]
            raise AgentError("command_failed", f"Command failed: {summary}", **reply,
                             stderr_tail=log.redact(error[-4096:]))
        return reply

    def _timeout(self, entry):
        remaining = self.ctx.remaining()
        return entry.timeout if remaining is None else min(entry.timeout, remaining)

    # -- kinds ------------------------------------------------------------------------

    def _run_refuse(self, entry):
        raise AgentError("failed_precondition", f"{entry.id} is not available: use agent.update.apply")

    def _run_supervisor(self, entry):
        try:
            result = require_ipc(self.services).call(entry.op, dict(entry.op_args), timeout=self._timeout(entry)) or {}
        except AgentError as exc:
            if exc.code != "command_failed":
                raise
            # the op's program exited non-zero: answered like any failed command (output
            # fields and "Command failed: ..."), not as the bare IPC error (issue 18)
            return "", str(exc.details.get("stderr_tail") or exc.message)[:OUTPUT_CAP], \
                int(exc.details.get("exit_code") or 1)
        output = result.get("output") or result.get("message") or (json.dumps(result, sort_keys=True) if result else "")
        return str(output)[:OUTPUT_CAP], str(result.get("error") or "")[:OUTPUT_CAP], int(result.get("exit_code") or 0)

    def _run_restart_agent(self, entry):
        ipc = require_ipc(self.services)
        self.services.spawn("agent-restart", _restart_worker_later, ipc)
        return "agent restart requested: the supervisor restarts pulseup-worker after this reply", "", 0

    def _run_argv(self, entry):
        docker = shutil.which("docker", path=proc.CHILD_PATH)
        if docker is None:
            raise AgentError("failed_precondition", "the docker CLI is not installed (needed by docker.list_all)")
        argv = [docker, "ps", "--all", "--no-trunc", "--format",
                "table {{.ID}}\t{{.Names}}\t{{.Status}}\t{{.Image}}"]
        result = proc.run(argv, child_env(self.cfg), self._timeout(entry), on_cancel=self.ctx.on_cancel)
        self.ctx.check()  # a cancelled run ends with the cancellation, not its exit code
        return result

    def _run_sdk(self, entry):
        docker = self.services.docker
        with translate(entry.id):
            lines = getattr(self, f"_sdk_{entry.op}")(docker)
        return "\n".join(lines)[:OUTPUT_CAP], "", 0

    def _sdk_prune_images(self, docker):
        return _prune_lines("images", docker.client.images.prune(filters={"dangling": False}))

    def _sdk_prune_volumes(self, docker):
        filters = {"label!": DATABASE_VOLUMES}
        if _api_at_least(docker.api.api_version, "1.42"):
            filters["all"] = "true"   # API 1.42 prunes only anonymous volumes without it
        return _prune_lines("volumes", docker.client.volumes.prune(filters=filters))

    def _sdk_system_prune(self, docker):
        # Stopped managed containers are services the user stopped: removing them is
        # service.delete's job, not a prune's.
        lines = _prune_lines("containers", docker.client.containers.prune(filters={"label!": f"{MANAGED}=true"}))
        lines += _prune_lines("networks", docker.client.networks.prune())
        lines += self._sdk_prune_images(docker)
        lines += self._sdk_prune_volumes(docker)
        lines += _prune_lines("build cache", docker.api.prune_builds())
        return lines

    def _sdk_restart_caddy(self, docker):
        proxy = docker.proxy_container()
        if proxy is None:
            raise AgentError("not_found", "no PulseUp proxy container (label pulseup.component=caddy)")
        proxy.restart(timeout=30)
        return [f"restarted {proxy.name}"]


def _prune_lines(what, result):
    result = result or {}
    removed = next((v for k, v in result.items() if k.endswith("Deleted") and v), None) or []
    names = [r if isinstance(r, str) else ", ".join(f"{k}: {v}" for k, v in r.items()) for r in removed]
    return [f"{what}: removed {len(names)}, reclaimed {result.get('SpaceReclaimed', 0)} bytes"] + names


def _api_at_least(version, minimum):
    return tuple(int(p) for p in version.split(".")) >= tuple(int(p) for p in minimum.split("."))


def _restart_worker_later(ipc):
    gevent.sleep(RESTART_DELAY)
    try:
        ipc.call(OP_SERVICE_RESTART, {"unit": "pulseup-worker"}, timeout=30.0)
    except AgentError as exc:
        _log.error("agent.restart: the supervisor refused or is unreachable: %s", exc.message)


def child_env(cfg):
    """A minimal environment without the agent's secrets (docs/security.md, "Child processes")."""
    return proc.environment(DOCKER_HOST=cfg.docker_host or None)


# -- agent.logs.fetch (docs/commands.md, "Agent commands") -----------------------------------------------------

LOG_FILES = ("worker", "supervisor")
TAIL_BLOCK = 64 * 1024
TAIL_MAX_BYTES = 8 * 1024 * 1024
LOGS_BUDGET = 448 * 1024
_STAMP = re.compile(r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:[.,](\d+))?")


def agent_logs(cfg, lines, ring=None):
    """The agent's own last ``lines`` log lines, oldest first, redacted:
    ``{logs, sources, truncated}``. The in-process ring buffer comes first, then
    ``AGENT_LOG_DIR/{worker,supervisor}.log`` when readable (worker lines already in the
    ring are not repeated); lines are merged in timestamp order."""
    ring = log.ring if ring is None else ring
    memory = ring.tail(len(ring.lines))
    collected, sources = list(memory), ["ring_buffer"]
    seen = set(memory)
    for name in LOG_FILES:
        path = os.path.join(cfg.agent_log_dir, f"{name}.log")
        tail = tail_file(path, lines)
        if tail is None:
            continue
        sources.append(path)
        collected += [line for line in tail if name != "worker" or line not in seen]
    ordered = _by_time(collected)
    chosen = [log.redact(line) for line in ordered[-lines:]]
    from agent.services.app.logs import fit
    fitted, cut = fit(chosen, LOGS_BUDGET)
    return {"logs": fitted, "sources": sources, "truncated": cut or len(ordered) > lines}


def _by_time(lines):
    """Stable sort on each line's timestamp; a line without one keeps its predecessor's."""
    keyed, last = [], ""
    for line in lines:
        match = _STAMP.search(line[:80])
        if match:
            last = f"{match.group(1)}T{match.group(2)}.{(match.group(3) or '').ljust(9, '0')}"
        keyed.append((last, line))
    keyed.sort(key=lambda pair: pair[0])
    return [line for _, line in keyed]


def tail_file(path, count):
    """The last ``count`` lines of a text file (reading backwards in blocks, at most
    TAIL_MAX_BYTES); None when the file cannot be read."""
    try:
        with open(path, "rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            data, position = b"", end
            while position > 0 and data.count(b"\n") <= count and end - position < TAIL_MAX_BYTES:
                step = min(TAIL_BLOCK, position)
                position -= step
                handle.seek(position)
                data = handle.read(step) + data
    except OSError:
        return None
    lines = data.decode("utf-8", errors="replace").splitlines()
    if position > 0 and lines:
        lines = lines[1:]  # the first one is probably cut
    return [line for line in lines if line.strip()][-count:]
