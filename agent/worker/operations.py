"""Running calls, operations and per-service FIFO queues (docs/commands.md, "Operations").

Every call that runs gets a :class:`Job` with a deadline. Commands with an
``OperationSpec`` are also *operations*: listed, cancellable, and serialised
per key (usually the service uid) through :class:`OperationTable`, where a
waiting operation holds no pool slot (docs/protocol.md, "Dispatch").
"""

import collections
import json
import os
import time

from agent import log
from agent.errors import AgentError
from agent.fsutil import atomic_write
from agent.values import rfc3339
from agent.worker.recovery import OWNERS

_log = log.get("operations")
MAX_QUEUED_PER_KEY = 16
# kinds recorded in operations.json for a restart: those recovery acts on, and backups
# (reported failed, their partial files removed; docs/operations.md, "Restart recovery")
RECOVERED_KINDS = ("backup", *OWNERS)


class Job:
    """One admitted call (or, with ``message`` None, an operation the agent made itself):
    its request, deadline and (while running) greenlet."""

    def __init__(self, message, command, request, timeout, spec=None):
        self.message = message
        self.command = command
        self.request = request
        self.call_id = message.call_id if message is not None else None
        self.received_wall = time.time()
        self.deadline = time.monotonic() + timeout
        self.spec = spec
        self.operation_id = spec.operation_id(request) if spec else None
        self.lock_key = spec.lock_key(request) if spec and spec.lock_key else None
        self.state = "queued"
        self.phase = None
        self.started_wall = None
        self.greenlet = None
        self.stop_error = None
        self.no_return = False
        self.cleanups = []
        self.answered = False
        self.error = None          # the AgentError it was answered with, if any
        self.on_finished = None    # callback(job), for jobs submitted by the agent itself

    # -- used by CallContext --------------------------------------------
    def raise_if_stopped(self):
        if self.stop_error is not None:
            raise self.stop_error
        if time.monotonic() >= self.deadline and not self.no_return:
            raise AgentError("deadline_exceeded", f"{self.command.name}: deadline exceeded")

    def pass_point_of_no_return(self):
        self.no_return = True

    def add_cleanup(self, callback):
        self.cleanups.append(callback)

    # -- used by the dispatcher -------------------------------------------
    def stop(self, error):
        """Cancel or expire: run cleanups, interrupt the greenlet. Returns the new state."""
        if self.no_return:
            return "not_cancellable"
        if self.stop_error is None:
            self.stop_error = error
            self.state = "cancelling"
            for callback in self.cleanups:
                try:
                    callback()
                except Exception:
                    _log.exception("cleanup of %s failed", self.operation_id or self.call_id)
            if self.greenlet is not None:
                self.greenlet.kill(error, block=False)
        return "cancelling"

    def describe(self):
        request = self.request or {}
        info = {
            "operation_id": self.operation_id, "kind": self.spec.kind, "command": self.command.name,
            "state": self.state, "received_at": rfc3339(self.received_wall, precision="auto"),
            "deadline_at": rfc3339(time.time() + self.deadline - time.monotonic(), precision="auto"),
        }
        for key in ("service_uid", "deployment_uid", "backup_uid"):
            if request.get(key):
                info[key] = request[key]
        for key, value in (("call_id", self.call_id), ("phase", self.phase)):
            if value:
                info[key] = value
        if self.started_wall:
            info["started_at"] = rfc3339(self.started_wall, precision="auto")
        return info


class OperationTable:
    """Listed operations, their per-key FIFO queues and the restart record."""

    def __init__(self, state_dir=None):
        self.by_id = {}
        self.holders = {}
        self.queues = collections.defaultdict(collections.deque)
        self._record_path = os.path.join(state_dir, "operations.json") if state_dir else None

    def find(self, operation_id=None, call_id=None, deployment_uid=None, backup_uid=None):
        for job in self.by_id.values():
            request = job.request or {}
            if (operation_id and job.operation_id == operation_id or call_id and job.call_id == call_id
                    or deployment_uid and request.get("deployment_uid") == deployment_uid
                    or backup_uid and request.get("backup_uid") == backup_uid):
                return job
        return None

    def admit(self, job):
        """Register ``job``; True when it may start now, False when it waits in its queue."""
        if job.operation_id in self.by_id:
            raise AgentError("conflict", f"operation {job.operation_id} is already running or queued",
                             duplicate=True)
        key = job.lock_key
        if key is not None and (key in self.holders or self.queues[key]):
            if len(self.queues[key]) >= MAX_QUEUED_PER_KEY:
                raise AgentError("conflict", f"service {key} queue is full")
            self.by_id[job.operation_id] = job
            if job.spec.preempting:
                self.queues[key].appendleft(job)
            else:
                self.queues[key].append(job)
            self._save()
            return False
        self.by_id[job.operation_id] = job
        if key is not None:
            self.holders[key] = job
        self._save()
        return True

    def others_of_key(self, job):
        """The running holder and queued jobs of ``job``'s key (service.delete pre-empts them)."""
        queued = [j for j in self.queues.get(job.lock_key, ()) if j is not job]
        return self.holders.get(job.lock_key), queued

    def dequeue(self, job):
        """Remove a queued job (cancelled or expired before it started)."""
        queue = self.queues.get(job.lock_key)
        if queue and job in queue:
            queue.remove(job)
        self.by_id.pop(job.operation_id, None)
        self._save()

    def release(self, job):
        """``job`` finished; returns the next job of its key to start, if any."""
        self.by_id.pop(job.operation_id, None)
        following = None
        key = job.lock_key
        if key is not None and self.holders.get(key) is job:
            del self.holders[key]
            queue = self.queues.get(key)
            if queue:
                following = queue.popleft()
                self.holders[key] = following
            if not queue:
                self.queues.pop(key, None)
        self._save()
        return following

    def listing(self, service_uid=None):
        jobs = sorted(self.by_id.values(), key=lambda j: j.received_wall)
        return [j.describe() for j in jobs
                if service_uid is None or (j.request or {}).get("service_uid") == service_uid]

    def _save(self):
        if self._record_path is None:
            return
        records = [{"operation_id": j.operation_id, "kind": j.spec.kind, **{
            k: j.request[k] for k in ("service_uid", "deployment_uid", "backup_uid", "backup_type")
            if (j.request or {}).get(k)}, **({"call_id": j.call_id} if j.message is not None and j.message.type == "call" else {})}
            for j in self.by_id.values() if j.spec.kind in RECOVERED_KINDS]
        try:
            os.makedirs(os.path.dirname(self._record_path), mode=0o700, exist_ok=True)
            atomic_write(self._record_path, json.dumps(records).encode())
        except OSError as exc:
            _log.warning("cannot record operations: %s", exc)


def load_interrupted(state_dir):
    """Operations recorded as in progress by a previous process (then forgotten)."""
    path = os.path.join(state_dir, "operations.json")
    try:
        with open(path, encoding="utf-8") as handle:
            records = json.load(handle)
    except (OSError, ValueError):
        return []
    os.unlink(path)
    return records if isinstance(records, list) else []
