"""How a scheduled backup run gets its place among the service's operations.

docs/commands.md, "Operations": scheduled backups are operations ``backup:<backup_uid>`` serialised per
service, and rule 4: a scheduled run that finds a backup of the same service running or
queued is skipped. In the worker, :class:`DispatcherRunner` admits the run into the
dispatcher's own operation table (listed, cancellable, FIFO behind a deploy or restore of
the service, recorded in operations.json). Without a dispatcher (tools, unit tests),
:class:`LocalRunner` runs it in a greenlet owned by ``services.spawn`` and only keeps
runs of one service apart.
"""

import time

from agent.errors import AgentError
from agent.operations import spec

COMMAND = "database.backup.scheduled"       # the name operations.list shows; its row is in agent/operations.py
SPEC = spec(COMMAND)


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
        from agent.services.context import CallContext
        ctx = CallContext(self.services, COMMAND, deadline=time.monotonic() + SPEC.default_timeout(request),
                          emit=self.services.events.emit)
        try:
            func(ctx, request)
        except AgentError:
            pass            # reported by func through backup_status_update
        finally:
            ctx.close()
            self.active.pop(request["service_uid"], None)


class DispatcherRunner:
    """Admit runs as operations of the worker's dispatcher through its job port (one table,
    one lock per service): ``jobs.submit`` and ``jobs.busy``."""

    def __init__(self, jobs):
        self.jobs = jobs

    def busy(self, service_uid):
        """A backup operation (manual, scheduled or pre-restore safety) of the service is
        running or queued."""
        return self.jobs.busy("backup", service_uid)

    def submit(self, request, func, not_started):
        """Queue ``func`` behind the service's other operations; ``not_started(error)`` when
        it never ran."""
        self.jobs.submit(COMMAND, request, func, SPEC, not_started)
