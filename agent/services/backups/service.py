"""The backup-operations service: uploads, schedules, retention and storage paths.

Handlers reach it as ``ctx.services.backups``; the worker calls :meth:`BackupsService.start`
to run the scheduler loop. Backups themselves are made by the database service's pipeline
(docs/commands.md, "Databases"); a scheduled run adds the copy to ``storage_path`` and
retention, and holds back the pipeline's ``completed`` event until both are done so the
control plane sees exactly one terminal status per run.
"""

import contextlib
import os

from agent import log
from agent.errors import AgentError
from agent.services.backups import pipeline, retention, storage
from agent.services.backups.runner import DispatcherRunner, LocalRunner
from agent.services.backups.schedule import ScheduleStore
from agent.services.backups.scheduler import Scheduler
from agent.services.backups.upload import Uploader
from agent.services.backups import manifest as mf

_log = log.get("backups")


class Pins:
    """Real paths that retention must not delete (uploads in progress)."""

    def __init__(self):
        self._counts = {}

    @contextlib.contextmanager
    def hold(self, path):
        real = os.path.realpath(path)
        self._counts[real] = self._counts.get(real, 0) + 1
        try:
            yield real
        finally:
            self._counts[real] -= 1
            if not self._counts[real]:
                del self._counts[real]

    def paths(self):
        return frozenset(self._counts)


class BackupsService:
    def __init__(self, services, backup_func=None, catchup_delay=None):
        """``backup_func(ctx, job)`` (what a scheduled run calls) defaults to :meth:`create`."""
        self.services = services
        self.cfg = services.cfg
        self.pins = Pins()
        self.uploader = Uploader(self.cfg, self.pins, services.identity_loader)
        self._backup = backup_func or self.create
        kwargs = {} if catchup_delay is None else {"catchup_delay": catchup_delay}
        self.scheduler = Scheduler(ScheduleStore(self.cfg.state_dir), self._launch, **kwargs)
        self.runner = DispatcherRunner(services.jobs) if services.jobs is not None else LocalRunner(services)
        self._loop = None

    def start(self, services=None):
        """Load the persisted schedules and start the scheduler loop (once)."""
        services = services or self.services
        if self._loop is None or self._loop.dead:
            self._loop = services.spawn("backup-scheduler", self.scheduler.run)
        return self._loop

    def close(self):
        if self._loop is not None:
            self._loop.kill(block=False)

    def recover(self, record, reason):
        """Restart hook, before anything runs: an interrupted backup (or a restore's safety
        backup) leaves its temporary file in the service's backup directory, which goes; for
        an interrupted backup, the failed ``backup_status_update`` to report (else None)."""
        uid = record.get("service_uid")
        if record.get("kind") in ("backup", "restore") and isinstance(uid, str) and _plain_name(uid):
            _discard_partials(os.path.join(self.cfg.pulseup_backup_dir, uid), uid)
        if not record.get("backup_uid"):
            return None
        return pipeline.status_update(record["backup_uid"], record.get("service_uid"), "failed",
                                      record.get("backup_type", "manual"), AgentError("internal", reason))

    # -- commands ------------------------------------------------------------
    def create(self, ctx, job):
        """database.backup.create: ``job`` is a pipeline.BackupJob; the reply data. Raises
        AgentError as pipeline.run and the database target lookup document."""
        found = self.services.database.target(ctx, job.service_uid)
        return pipeline.run(ctx, self.services.docker, self.cfg, found, job)

    def list(self, service_uid):
        """database.backup.list: BackupEntry dicts of the service, newest first (never raises
        for a missing directory)."""
        directory = os.path.join(self.cfg.pulseup_backup_dir, service_uid)
        return mf.list_entries(directory, service_uid)

    def upload(self, ctx, service_uid, backup_uid, backup_path=None):
        """database.backup.download; raises AgentError as Uploader.upload documents."""
        return self.uploader.upload(ctx, service_uid, backup_uid, backup_path)

    def update_automation(self, service_uid, enabled, cron_expression, tz_name, storage_path, retention_days):
        """database.backup.automation.update. Raises AgentError: invalid_argument (cron, time
        zone, storage_path outside the roots or not a directory), failed_precondition."""
        if enabled and not (cron_expression or "").strip():
            raise AgentError("invalid_argument", "cron_expression: required when enabled",
                             field="cron_expression")
        if storage_path:
            storage.resolve(self.cfg, storage_path)
        schedule = self.scheduler.update(service_uid, enabled, cron_expression, tz_name,
                                         storage_path or None, retention_days)
        reply = {"status": "ok"}
        reply.update({k: v for k, v in schedule.public().items() if k not in ("last_run_at", "last_status")})
        return reply

    def get_automation(self, service_uid):
        """database.backup.automation.get: the persisted schedule or ``{enabled: false}``."""
        schedule = self.scheduler.get(service_uid)
        return schedule.public() if schedule is not None else {"enabled": False}

    def delete_schedule(self, service_uid):
        """Remove the schedule of a deleted service; True when one existed."""
        return self.scheduler.delete(service_uid)

    def on_service_delete(self, service_uid, options):
        """service.delete takes part here: the backup schedule goes with the service."""
        removed = self.delete_schedule(service_uid)
        return {"paths_removed": [f"backup-automation/{service_uid}.json"] if removed else []}

    def verify_storage(self, storage_path):
        """database.backup.storage.verify; raises AgentError as storage.verify documents."""
        return storage.verify(self.cfg, storage_path)

    # -- scheduled runs ------------------------------------------------------------
    def _launch(self, schedule, backup_uid):
        uid = schedule.service_uid
        request = {"service_uid": uid, "backup_uid": backup_uid, "backup_type": "scheduled"}
        if self.runner.busy(uid):
            error = AgentError("conflict", f"scheduled backup skipped: a backup of service {uid} "
                                           "is already running or queued")
            _terminal(self.services.events, request, error)
            self.scheduler.record(uid, backup_uid, "skipped", error.message)
            return

        def not_started(error):
            _terminal(self.services.events, request, error)
            self.scheduler.record(uid, backup_uid, "failed", error.message)

        self.runner.submit(request, lambda ctx, req: self._run(ctx, schedule, req), not_started)

    def _run(self, ctx, schedule, request):
        """One scheduled run: pipeline, copy, retention, then one terminal event."""
        from agent.services.backups.pipeline import BackupJob
        uid = schedule.service_uid
        held = HeldEvents(ctx, uid, request["backup_uid"])
        try:
            result = self._backup(held, BackupJob(uid, request["backup_uid"], backup_type="scheduled"))
            if schedule.storage_path:
                result["storage_copy_path"] = self._copy(ctx, schedule, result["backup_path"])
            self._retention(schedule)
        except AgentError as exc:
            held.fail(exc)
            self.scheduler.record(uid, request["backup_uid"], "failed", exc.message)
            raise
        except BaseException:
            held.fail(AgentError("cancelled", "backup cancelled"))
            self.scheduler.record(uid, request["backup_uid"], "failed", "backup cancelled")
            raise
        held.release()
        self.scheduler.record(uid, request["backup_uid"], "completed")
        return result

    def _copy(self, ctx, schedule, backup_path):
        """Copy into storage_path unless it is the service's own backup directory."""
        target = storage.ensure(self.cfg, schedule.storage_path)
        if target == os.path.realpath(os.path.dirname(backup_path)):
            return None
        try:
            return storage.copy_backup(backup_path, target, ctx.check)
        except (OSError, ValueError) as exc:
            raise AgentError("failed_precondition", f"backup {os.path.basename(backup_path)} was created "
                                                    f"but copying it to {target} failed: {exc}") from exc

    def _retention(self, schedule):
        if schedule.retention_days <= 0:
            return
        uid = schedule.service_uid
        directories = [os.path.join(self.cfg.pulseup_backup_dir, uid)]
        if schedule.storage_path:
            try:
                directories.append(storage.resolve(self.cfg, schedule.storage_path))
            except AgentError as exc:
                _log.warning("retention of %s skips storage_path: %s", uid, exc.message)
        pinned = self.pins.paths() | self._restoring(uid)
        try:
            retention.apply(directories, uid, schedule.retention_days, pinned)
        except OSError as exc:
            _log.warning("retention of %s failed: %s", uid, exc)

    def _restoring(self, service_uid):
        """Backups a running or queued restore of the service will read (never deleted)."""
        if self.services.jobs is None:
            return frozenset()
        from agent.services.database import restore
        paths = set()
        for request in self.services.jobs.requests("restore", service_uid):
            try:
                paths.add(restore.resolve(self.cfg, service_uid, request.get("backup_path"),
                                          request.get("backup_uid")))
            except AgentError:
                continue
        return frozenset(paths)


def _plain_name(uid):
    return uid and "/" not in uid and uid not in (".", "..")


def _discard_partials(directory, uid):
    try:
        names = mf.discard_partials(directory)
    except OSError as exc:
        _log.warning("cannot remove partial backups of %s: %s", uid, exc.strerror)
        return
    if names:
        _log.info("removed %d partial backup file(s) of %s left by the interrupted operation", len(names), uid)


def _terminal(events, request, error):
    events.emit(*pipeline.status_update(request["backup_uid"], request["service_uid"], "failed", "scheduled", error))


class HeldEvents:
    """A CallContext stand-in for the backup pipeline that holds back its ``completed``
    status event until the scheduled run's copy and retention are done."""

    def __init__(self, ctx, service_uid, backup_uid):
        self._ctx = ctx
        self._service_uid = service_uid
        self._backup_uid = backup_uid
        self._held = None
        self._started = False
        self._ended = False

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    def emit(self, event, data):
        if event == "backup_status_update" and data.get("backup_uid") == self._backup_uid:
            if data.get("status") == "in_progress":
                self._started = True
            elif data.get("status") == "completed":
                self._held = (event, data)
                return
            else:
                self._ended = True
        self._ctx.emit(event, data)

    def release(self):
        if self._held is not None and not self._ended:
            self._ended = True
            self._ctx.emit(*self._held)

    def fail(self, error):
        """Report ``error`` as the run's end unless the pipeline already reported one."""
        if self._ended:
            return
        uids = self._backup_uid, self._service_uid
        if not self._started:
            self._ctx.emit(*pipeline.status_update(*uids, "in_progress", "scheduled", started_at=mf.rfc3339()))
        self._ended = True
        self._ctx.emit(*pipeline.status_update(*uids, "failed", "scheduled", error))

