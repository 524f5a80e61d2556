"""agent.ping and the operation commands (docs/commands.md, "Agent commands")."""

from marshmallow import validate

from agent import __version__
from agent.errors import AgentError
from agent.protocol import envelope
from agent.protocol.fields import RequestSchema, StrictString, Uid


def ping(ctx, data):
    """Echo the request as received: {} when absent, null when null (docs/commands.md, "Agent commands")."""
    reply = {"echo": data, "version": __version__,
             "uptime_seconds": ctx.services.jobs.uptime()}
    if len(envelope.encode(reply)) > envelope.MAX_OUTBOUND_BYTES - 1024:
        raise AgentError("invalid_argument", "agent.ping: reply would exceed 512 KiB")
    return reply


class _ListRequest(RequestSchema):
    service_uid = Uid(load_default=None)     # docs/commands.md, "Identifiers and values": validated like every service_uid


def operations_list(ctx, request):
    return {"operations": ctx.services.jobs.operations.listing(request["service_uid"])}


_SELECTORS = ("operation_id", "call_id", "deployment_uid", "backup_uid")


class _CancelRequest(RequestSchema):
    operation_id = StrictString()
    call_id = StrictString()
    deployment_uid = StrictString()
    backup_uid = StrictString()
    reason = StrictString(validate=validate.Length(max=256), load_default=None)


def operations_cancel(ctx, request):
    given = [key for key in _SELECTORS if request.get(key)]
    if len(given) != 1:
        raise AgentError("invalid_argument", "exactly one of operation_id, call_id, deployment_uid, backup_uid")
    dispatcher = ctx.services.jobs     # the dispatcher, the services' job port
    job = dispatcher.operations.find(**{given[0]: request[given[0]]})
    if job is None:
        raise AgentError("not_found", f"no operation matches {given[0]}={request[given[0]]}", field=given[0])
    reason = request.get("reason") or "cancelled by agent.operations.cancel"
    state = dispatcher.cancel(job=job, reason=reason)
    return {"operation_id": job.operation_id, "state": state}


def register(registry):
    registry.add("agent.ping", ping, raw=True)
    registry.add("agent.operations.list", operations_list, _ListRequest())
    registry.add("agent.operations.cancel", operations_cancel, _CancelRequest())
