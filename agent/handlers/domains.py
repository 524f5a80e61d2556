"""``service.domain.manage``: upsert, remove and status of a service's domains (docs/commands.md, "Domains and the proxy").

Upsert and remove are operations ``domain:<service_uid>`` serialised per service (docs/commands.md,
"Operations", 120 s / 600 s); ``status`` is read-only and never waits, so it gets no
service lock and an operation id of its own.
"""


from marshmallow import ValidationError, validate, validates_schema

from agent.errors import AgentError
from agent.operations import spec
from agent.protocol.fields import RequestSchema, StrictBoolean, StrictInteger, StrictString, Uid, printable

UPSERT = ("add", "add_domain", "configure_domain", "upsert", "update", "update_domain")
REMOVE = ("remove", "remove_domain")
STATUS = ("status", "domain_status")


class DomainManageSchema(RequestSchema):
    action = StrictString(required=True, validate=printable(1, 32))
    service_uid = Uid(required=True)
    domain = StrictString(required=True, validate=printable(1, 1024))
    port = StrictInteger(validate=validate.Range(1, 65535, error="must be 1-65535"))
    protocol = StrictString(load_default="http", validate=validate.OneOf(["http", "https"]))
    managed_certificate = StrictBoolean()
    ssl = StrictBoolean()
    force_https = StrictBoolean()
    redirect_www = StrictString(load_default="none", validate=printable(maximum=32))
    email = StrictString(validate=printable(1, 254))

    @validates_schema
    def _port_for_upsert(self, data, **kwargs):
        if _action(data) == "upsert" and "port" not in data:
            raise ValidationError("required for upsert", "port")


def _action(request):
    action = str(request.get("action", "")).strip().lower()
    for kind, names in (("upsert", UPSERT), ("remove", REMOVE), ("status", STATUS)):
        if action in names:
            return kind
    return None


def _is_change(request):
    """docs/commands.md, "Operations": domain `status` is read-only: not an operation, never waits."""
    return _action(request) != "status"


def manage(ctx, request):
    action, uid, proxy = _action(request), request["service_uid"], ctx.services.proxy
    if action == "upsert":
        managed = request.get("managed_certificate", request.get("ssl", True))
        domain_info = proxy.upsert(
            uid, request["domain"], request["port"], request["protocol"], managed,
            request.get("force_https"), request["redirect_www"], request.get("email"))
        return {"success": True, "message": "domain configured successfully",
                "domain": domain_info["domain"], "domain_info": domain_info}
    if action == "remove":
        name = proxy.remove(uid, request["domain"])
        return {"success": True, "message": "domain removed successfully", "domain": name}
    if action == "status":
        return {"success": True, "domain_info": proxy.status(uid, request["domain"])}
    raise AgentError("unimplemented", f"unknown action: {request['action']}", field="action")


def _failure_details(exc):
    """docs/commands.md, "Domains and the proxy": every failure's data carries success and message
    beside code (refusals of the request schema included)."""
    return {"success": False, "message": exc.message}


def register(registry):
    registry.add("service.domain.manage", manage, DomainManageSchema(),
                 spec("service.domain.manage", applies=_is_change), error_details=_failure_details)
