"""The backup commands (docs/commands.md, "Databases"): ``database.backup.create|list|restore``,
``database.backup.download`` (the upload), ``database.backup.automation.update|get``,
``database.backup.storage.verify``.

Thin handlers: the schemas validate every field (docs/commands.md, "Identifiers and values") before any work, the
upload's OperationSpec carries docs/commands.md, "Operations" (``upload:<backup_uid>``, not serialised:
the file is pinned against retention instead), and ``ctx.services.backups`` does the rest.
"""

import re

from marshmallow import ValidationError, validate, validates_schema

from agent.operations import spec
from agent.protocol.fields import (RequestSchema, StrictBoolean, StrictInteger, StrictString, Uid, matching,
                                   printable)
from agent.services.backups.pipeline import BackupJob
from agent.services.database.engines import DATABASE_RE

# Scheduled and safety backup uids are longer than 64 characters (docs/commands.md, "Identifiers and values").
BACKUP_UID_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
                           r"|auto-[A-Za-z0-9][A-Za-z0-9_.-]{0,63}-[0-9a-f-]{36}"
                           r"|prerestore-[0-9a-f-]{36})\Z")

def BackupUid(**kwargs):
    return StrictString(validate=validate.Regexp(BACKUP_UID_RE, error="invalid backup uid"), **kwargs)


_PATH = printable(1, 4096)


class BackupCreateSchema(RequestSchema):
    service_uid = Uid(required=True)
    backup_uid = BackupUid(required=True)
    database = StrictString(validate=matching(DATABASE_RE))
    format = StrictString(validate=validate.OneOf(["custom", "plain"]))
    compression = StrictString(load_default="zstd", validate=validate.OneOf(["zstd", "gzip"]))


class BackupListSchema(RequestSchema):
    service_uid = Uid(required=True)


class BackupRestoreSchema(RequestSchema):
    service_uid = Uid(required=True)
    backup_path = StrictString(validate=validate.Length(1, 4096))
    backup_uid = BackupUid()
    safety_backup = StrictBoolean(load_default=True)

    @validates_schema
    def _one_reference(self, data, **kwargs):
        if not data.get("backup_path") and not data.get("backup_uid"):
            raise ValidationError("backup_path or backup_uid is required", "backup_path")


class DownloadSchema(RequestSchema):
    service_uid = Uid(required=True)
    backup_uid = BackupUid(required=True)
    backup_path = StrictString(validate=_PATH)


class AutomationUpdateSchema(RequestSchema):
    service_uid = Uid(required=True)
    enabled = StrictBoolean(load_default=False)
    cron_expression = StrictString(load_default="", allow_none=True, validate=printable(maximum=256))
    timezone = StrictString(load_default="UTC", validate=printable(1, 64))
    storage_path = StrictString(load_default=None, allow_none=True, validate=printable(maximum=4096))
    retention_days = StrictInteger(load_default=0, validate=validate.Range(0, 3650))


class ServiceSchema(RequestSchema):
    service_uid = Uid(required=True)


class StorageVerifySchema(RequestSchema):
    service_uid = Uid(required=True)
    storage_path = StrictString(required=True, validate=_PATH)


def backup_create(ctx, request):
    job = BackupJob(request["service_uid"], request["backup_uid"], request.get("database"),
                    request.get("format"), request["compression"])
    return ctx.services.backups.create(ctx, job)


def backup_list(ctx, request):
    entries = ctx.services.backups.list(request["service_uid"])
    return {"status": "success", "backups": entries, "count": len(entries)}


def backup_restore(ctx, request):
    return ctx.services.database.restore(
        ctx, request["service_uid"], backup_path=request.get("backup_path"),
        backup_uid=request.get("backup_uid"), safety_backup=request["safety_backup"])


def download(ctx, request):
    return ctx.services.backups.upload(ctx, request["service_uid"], request["backup_uid"],
                                       request.get("backup_path"))


def automation_update(ctx, request):
    return ctx.services.backups.update_automation(
        request["service_uid"], request["enabled"], request["cron_expression"] or "",
        request["timezone"], request["storage_path"] or None, request["retention_days"])


def automation_get(ctx, request):
    return ctx.services.backups.get_automation(request["service_uid"])


def storage_verify(ctx, request):
    return ctx.services.backups.verify_storage(request["storage_path"])


def register(registry):
    registry.add("database.backup.create", backup_create, BackupCreateSchema(), spec("database.backup.create"))
    registry.add("database.backup.list", backup_list, BackupListSchema())
    registry.add("database.backup.restore", backup_restore, BackupRestoreSchema(), spec("database.backup.restore"))
    registry.add("database.backup.download", download, DownloadSchema(), spec("database.backup.download"))
    registry.add("database.backup.automation.update", automation_update, AutomationUpdateSchema())
    registry.add("database.backup.automation.get", automation_get, ServiceSchema())
    registry.add("database.backup.storage.verify", storage_verify, StorageVerifySchema())
