"""``database.backup.download`` (the upload), ``database.backup.automation.update|get``,
``database.backup.storage.verify`` (docs/commands.md, "Databases").

Thin handlers: the schemas validate every field (docs/commands.md, "Identifiers and values") before any work, the
upload's OperationSpec carries docs/commands.md, "Operations" (``upload:<backup_uid>``, not serialised:
the file is pinned against retention instead), and ``ctx.services.backups`` does the rest.
"""

from marshmallow import validate

from agent.handlers.database import BackupUid
from agent.handlers.operations_table import spec
from agent.protocol.fields import RequestSchema, StrictBoolean, StrictInteger, StrictString, Uid, printable

_PATH = printable(1, 4096)


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
    registry.add("database.backup.download", download, DownloadSchema(), spec("database.backup.download"))
    registry.add("database.backup.automation.update", automation_update, AutomationUpdateSchema())
    registry.add("database.backup.automation.get", automation_get, ServiceSchema())
    registry.add("database.backup.storage.verify", storage_verify, StorageVerifySchema())
