"""``service.start|stop|restart|delete`` and ``service.status.get`` (docs/commands.md, "Lifecycle").

Start, stop and restart share the ``lifecycle:<uid>`` operation, serialised per service
(docs/commands.md, "Operations", 120 s / 600 s); delete pre-empts whatever runs for the service
(300 s / 1800 s); status is read-only and never waits.
"""

from agent.operations import spec
from agent.protocol.fields import RequestSchema, StrictBoolean, Uid
from agent.services.app.delete import Deletion
from agent.services.app.lifecycle import Lifecycle

LIFECYCLE = spec("service.start")
DELETE = spec("service.delete", preempting=True)


class ServiceRequest(RequestSchema):
    service_uid = Uid(required=True)


class DeleteRequest(ServiceRequest):
    delete_volumes = StrictBoolean(load_default=False)
    delete_backups = StrictBoolean(load_default=False)
    purge_files = StrictBoolean(load_default=False)


def _lifecycle(ctx):
    return Lifecycle(ctx.services.docker, ctx.emit, ctx.check, ctx.remaining)


def start(ctx, request):
    return _lifecycle(ctx).start(request["service_uid"])


def stop(ctx, request):
    return _lifecycle(ctx).stop(request["service_uid"])


def restart(ctx, request):
    return _lifecycle(ctx).restart(request["service_uid"])


def status(ctx, request):
    return _lifecycle(ctx).status(request["service_uid"])


def delete(ctx, request):
    return Deletion(ctx.services, request["service_uid"], request["delete_volumes"],
                    request["delete_backups"], request["purge_files"], ctx.check).run()


def register(registry):
    registry.add("service.start", start, ServiceRequest(), LIFECYCLE)
    registry.add("service.stop", stop, ServiceRequest(), LIFECYCLE)
    registry.add("service.restart", restart, ServiceRequest(), LIFECYCLE)
    registry.add("service.delete", delete, DeleteRequest(), DELETE)
    registry.add("service.status.get", status, ServiceRequest())
