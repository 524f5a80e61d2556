"""``database.deploy`` (docs/commands.md, "Databases"); the backup commands are in
:mod:`agent.handlers.backups`.

Thin handlers: the schemas validate every field of docs/commands.md, "Identifiers and values" before any work, the
OperationSpecs carry the deadlines and serialisation of docs/commands.md, "Operations", and the
database service does the rest.
"""

from marshmallow import ValidationError, validate, validates_schema

from agent.operations import spec
from agent.protocol.fields import RequestSchema, StrictBoolean, StrictInteger, StrictString, Uid, matching
from agent.services.database.engines import DATABASE_RE, ENGINE_NAMES, USERNAME_RE
from agent.services.database.provision import DeployRequest

_PASSWORD = validate.Regexp(r"^[^\x00\r\n]{1,256}\Z", error="1-256 characters without NUL, CR or LF")


def _engine_name(value):
    if not isinstance(value, str) or value.lower() not in ENGINE_NAMES:
        raise ValidationError(f"must be one of {', '.join(ENGINE_NAMES)}")


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


def deploy(ctx, request):
    fields_ = {k: request.get(k) for k in ("port", "username", "database", "deployment_uid")}
    req = DeployRequest(request["service_uid"], request["type"].lower(), request["password"],
                        public=request["public"], **fields_)
    return ctx.services.database.deploy(ctx, req)


def register(registry):
    registry.add("database.deploy", deploy, DeploySchema(), spec("database.deploy"))
