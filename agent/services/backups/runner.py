"""How a scheduled backup run gets its place among the service's operations.

commands.md 1.8: scheduled backups are operations ``backup:<backup_uid>`` serialised per
service, and rule 4: a scheduled run that finds a backup of the same service running or
queued is skipped. In the worker, :class:`DispatcherRunner` admits the run into the
dispatcher's own operation table (listed, cancellable, FIFO behind a deploy or restore of
the service, recorded in operations.json). Without a dispatcher (tools, unit tests),
:class:`LocalRunner` runs it in a greenlet owned by ``services.spawn`` and only keeps
runs of one service apart.
"""

import dataclasses
import time

from agent.errors import AgentError
from agent.protocol.envelope import Message

COMMAND = "database.backup.scheduled"       # the name operations.list shows
BASE_COMMAND = "database.backup.create"     # whose OperationSpec (commands.md 1.8) applies
TIMEOUT = 3600.0                            # commands.md 1.8 default of backups


class LocalRunner:
    """One greenlet per run; ``busy`` while a run of the service is in flight."""

    def __init__(self, services):
        self.services = services
        self.active = {}

    def busy(self, service_uid):
        return service_uid in self.active

    def submit(self, request, func, not_started):
        """Run ``func(ctx, request)`` in the background; ``not_started`` is unused here."""
        uid = request["service_uid"]
        self.active[uid] = request["backup_uid"]
        self.services.spawn(f"backup-run:{uid}", self._run, request, func)

    def _run(self, request, func):
        from agent.handlers.context import CallContext
        ctx = CallContext(self.services, COMMAND, deadline=time.monotonic() + TIMEOUT,
                          emit=self.services.events.emit)
        try:
            func(ctx, request)
        except AgentError:
            pass            # reported by func through backup_status_update
        finally:
            ctx.close()
            self.active.pop(request["service_uid"], None)


class DispatcherRunner:
    """Admit runs as operations of the worker's dispatcher (one table, one lock per service)."""

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher

    def busy(self, service_uid):
        """A backup operation (manual, scheduled or pre-restore safety) of the service is
        running or queued."""
        for job in list(self.dispatcher.operations.by_id.values()):
            request = job.request or {}
            if job.spec.kind == "backup" and request.get("service_uid") == service_uid:
                return True
        return False

    def submit(self, request, func, not_started):
        """Queue ``func`` behind the service's other operations. ``not_started(error)`` is
        called when the dispatcher ends the job before ``func`` ran (cancelled or expired
        while queued, refused by a full queue or pool, shutting down)."""
        if getattr(self.dispatcher, "draining", False):
            not_started(AgentError("unavailable", "agent is shutting down"))
            return
        base = self.dispatcher.registry.get(BASE_COMMAND)
        if base is None or base.operation is None:
            not_started(AgentError("failed_precondition", f"{BASE_COMMAND} is not available on this agent"))
            return
        started = []

        def run(ctx, req):
            started.append(True)
            return func(ctx, req)

        def finished(job):
            if not started:
                not_started(_why_not_started(job, self.dispatcher))

        command = dataclasses.replace(base, name=COMMAND, func=run)
        message = Message(type="event", event=COMMAND, data=request)
        from agent.worker.operations import Job   # only the worker has a dispatcher
        job = Job(message, command, request, base.operation.default_timeout(request), base.operation)
        job.on_finished = finished
        self.dispatcher.submit(job)


def _why_not_started(job, dispatcher):
    if job.error is not None:
        return job.error
    if time.monotonic() >= job.deadline:
        return AgentError("deadline_exceeded", "scheduled backup expired before it could start")
    return AgentError("unavailable", "agent is shutting down")
