"""Container logs and stats (docs/commands.md, "Logs and stats"): ``service.logs.fetch``,
``service.logs.stream.start|stop``, ``database.logs.fetch``, ``service.container.stats.live``.

All read-only: never serialised, never waiting (docs/commands.md, "Operations"). Streams run in
the background (:mod:`agent.services.app.log_streams`) after the start reply.
"""

from marshmallow import ValidationError, validate, validates_schema

from agent.errors import AgentError
from agent.protocol.fields import RequestSchema, StrictBoolean, StrictInteger, StrictNumber, StrictString, Uid
from agent.services.app import stats as docker_stats
from agent.services.docker import CONTAINER_REF, SERVICE_UID, labels_of
from agent.services.app.logs import fetch_database_logs, fetch_service_logs, parse_since


class Since(StrictString):
    """``since``: a duration (``10m`` ago) or an RFC 3339 UTC timestamp -> epoch seconds."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return parse_since(text)
        except ValueError as exc:
            raise ValidationError(f"must be {exc}") from None


class FetchRequest(RequestSchema):
    since = Since()
    service_uid = Uid(required=True)
    lines = StrictInteger(load_default=100, validate=validate.Range(1, 10000))


class DatabaseFetchRequest(RequestSchema):
    service_uid = Uid(required=True)
    lines = StrictInteger(load_default=100, validate=validate.Range(1, 10000))


class StreamStartRequest(RequestSchema):
    since = Since()
    service_uid = Uid(required=True)
    tail = StrictInteger(load_default=10, validate=validate.Range(0, 1000))
    follow = StrictBoolean()   # accepted and ignored: a stream always follows
    max_duration_seconds = StrictNumber(load_default=21600.0, validate=validate.Range(min=1, max=7 * 86400))


class StreamStopRequest(RequestSchema):
    service_uid = Uid(required=True)


class StatsRequest(RequestSchema):
    container_id = StrictString(validate=validate.Regexp(
        CONTAINER_REF, error="must be 12-64 lowercase hex characters or a container name"))
    service_uid = Uid()

    @validates_schema
    def _one_target(self, data, **kwargs):
        if not data.get("container_id") and not data.get("service_uid"):
            raise ValidationError("container_id or service_uid is required", "container_id")


def logs_fetch(ctx, request):
    return fetch_service_logs(ctx.services.docker, request["service_uid"], request["lines"], request.get("since"))


def database_logs_fetch(ctx, request):
    return fetch_database_logs(ctx.services.docker, request["service_uid"], request["lines"])


def stream_start(ctx, request):
    return ctx.services.container_logs.start(request["service_uid"], request["tail"], request.get("since"),
                                             request["max_duration_seconds"])


def stream_stop(ctx, request):
    ctx.services.container_logs.stop(request["service_uid"])
    return {"message": "Log streaming stopped", "service_uid": request["service_uid"]}


def stats_live(ctx, request):
    docker, uid = ctx.services.docker, request.get("service_uid")
    if request.get("container_id"):
        container = docker.get_container(request["container_id"])
        if uid and labels_of(container).get(SERVICE_UID) != uid:
            raise AgentError("invalid_argument", f"container_id: {container.name} does not belong to "
                             f"service {uid}", field="container_id")
    else:
        container = docker.active_container(uid) or docker.database_container(uid)
        if container is None:
            raise AgentError("not_found", f"service {uid} has no active or database container")
    return docker_stats.sample(docker, container)


def register(registry):
    registry.add("service.logs.fetch", logs_fetch, FetchRequest())
    registry.add("service.logs.stream.start", stream_start, StreamStartRequest())
    registry.add("service.logs.stream.stop", stream_stop, StreamStopRequest())
    registry.add("database.logs.fetch", database_logs_fetch, DatabaseFetchRequest())
    registry.add("service.container.stats.live", stats_live, StatsRequest())
