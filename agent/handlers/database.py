"""``database.deploy``, ``database.backup.create|list|restore`` (docs/commands.md, "Databases").

Thin handlers: the schemas validate every field of docs/commands.md, "Identifiers and values" before any work, the
OperationSpecs carry the deadlines and serialisation of docs/commands.md, "Operations", and the
database service does the rest.
"""

import re

from marshmallow import ValidationError, validate, validates_schema

from agent.handlers.operations_table import spec
from agent.protocol.fields import RequestSchema, StrictBoolean, StrictInteger, StrictString, Uid, matching
from agent.services.database.backup import BackupJob
from agent.services.database.engines import DATABASE_RE, ENGINE_NAMES, USERNAME_RE
from agent.services.database.provision import DeployRequest

# Scheduled and safety backup uids are longer than 64 characters (docs/commands.md, "Identifiers and values").
BACKUP_UID_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
                           r"|auto-[A-Za-z0-9][A-Za-z0-9_.-]{0,63}-[0-9a-f-]{36}"
                           r"|prerestore-[0-9a-f-]{36})\Z")
_PASSWORD = validate.Regexp(r"^[^\x00\r\n]{1,256}\Z", error="1-256 characters without NUL, CR or LF")


def _engine_name(value):
    if not isinstance(value, str) or value.lower() not in ENGINE_NAMES:
        raise ValidationError(f"must be one of {', '.join(ENGINE_NAMES)}")


def BackupUid(**kwargs):
    return StrictString(validate=validate.Regexp(BACKUP_UID_RE, error="invalid backup uid"), **kwargs)


class DeploySchema(RequestSchema):
    service_uid = Uid(required=True)
    type = StrictString(required=True, validate=_engine_name)
    password = StrictString(required=True, validate=_PASSWORD)
    port = StrictInteger(validate=validate.Range(1, 65535))
    username = StrictString(validate=matching(USERNAME_RE))
    database = StrictString()
    deployment_uid = Uid()
    public = StrictBoolean(load_default=False)

    @validates_schema
    def _per_engine(self, data, **kwargs):
        engine = data.get("type", "").lower()
        if engine in ("mysql", "mariadb") and data.get("username") == "root":
            raise ValidationError("root is refused for mysql/mariadb", "username")
        database = data.get("database")
        if database is None:
            return
        if engine == "redis":
            if not (database.isdigit() and int(database) <= 15):
                raise ValidationError("redis: a decimal integer 0-15", "database")
        elif not DATABASE_RE.match(database):
            raise ValidationError(f"must match {DATABASE_RE.pattern}", "database")


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


def deploy(ctx, request):
    fields_ = {k: request.get(k) for k in ("port", "username", "database", "deployment_uid")}
    req = DeployRequest(request["service_uid"], request["type"].lower(), request["password"],
                        public=request["public"], **fields_)
    return ctx.services.database.deploy(ctx, req)


def backup_create(ctx, request):
    job = BackupJob(request["service_uid"], request["backup_uid"], request.get("database"),
                    request.get("format"), request["compression"])
    return ctx.services.database.backup(ctx, job)


def backup_list(ctx, request):
    entries = ctx.services.database.list_backups(request["service_uid"])
    return {"status": "success", "backups": entries, "count": len(entries)}


def backup_restore(ctx, request):
    return ctx.services.database.restore(
        ctx, request["service_uid"], backup_path=request.get("backup_path"),
        backup_uid=request.get("backup_uid"), safety_backup=request["safety_backup"])


def register(registry):
    registry.add("database.deploy", deploy, DeploySchema(), spec("database.deploy"))
    registry.add("database.backup.create", backup_create, BackupCreateSchema(), spec("database.backup.create"))
    registry.add("database.backup.list", backup_list, BackupListSchema())
    registry.add("database.backup.restore", backup_restore, BackupRestoreSchema(), spec("database.backup.restore"))
