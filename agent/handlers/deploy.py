"""App delivery commands (docs/commands.md, "Deployments" and "Logs and stats"): ``service.app.deploy``, ``service.app.install``,
``service.deploy.rollback`` and the deployment log commands.

The schemas carry every field rule of 1.3 and 2.5.1; values that depend on settings (the
repository host allow-list) are checked first thing in the handler, before any other work.
"""

import json
import re
import time

from marshmallow import ValidationError, fields, post_load, pre_load, validate, validates_schema

from agent.errors import AgentError
from agent.operations import spec
from agent.protocol.fields import (FullMatch, RequestSchema, StrictBoolean, StrictInteger, StrictNumber,
                                   StrictString, Uid, printable)
from agent.services.git import validate_branch, validate_sha

ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}\Z")
MEMORY = re.compile(r"^(\d+)\s*(k|m|g|ki|mi|gi)?\Z", re.I)
MEMORY_UNITS = {None: 1, "k": 1000, "m": 1000**2, "g": 1000**3, "ki": 1024, "mi": 1024**2, "gi": 1024**3}
MIN_MEMORY = 6 * 1024**2
COMMIT_PREFIX = re.compile(r"^[0-9a-fA-F]{6,64}\Z")
IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._/-]{0,254}:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
COMPOSE_SERVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
SERVICE_ALIASES = (("DeploymentMethod", "deployment_method"), ("external_port", "exposed_port"),
                   ("compose_file", "docker_compose_path"), ("compose_service_mode", "docker_compose_service_mode"),
                   ("compose_selected_services", "docker_compose_selected_services"),
                   ("compose_project_name", "docker_compose_project_name"))
METHODS = {"docker-compose": "docker-compose", "dockerfile": "dockerfile", "nixpacks": "nixpacks",
           "buildpack": "nixpacks"}


class Branch(StrictString):
    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return validate_branch(text)
        except AgentError:
            raise ValidationError("must be a valid branch name ([A-Za-z0-9._/-], no '..', no leading '-')") from None


class Sha(StrictString):
    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return validate_sha(text)
        except AgentError:
            raise ValidationError("must be 7-64 hex characters") from None


class EnvVars(fields.Field):
    """docs/commands.md, "Identifiers and values" env rule: keys, values <= 32 KiB without NUL, whole map <= 1 MiB."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, dict):
            raise ValidationError("must be an object of strings")
        total = 0
        for key, item in value.items():
            if not isinstance(key, str) or not ENV_KEY.match(key):
                raise ValidationError(f"invalid key {str(key)[:64]!r}")
            if not isinstance(item, str) or "\x00" in item or len(item.encode()) > 32 * 1024:
                raise ValidationError(f"{key}: must be a string of at most 32 KiB without NUL")
            total += len(key) + len(item.encode())
        if total > 1024 * 1024:
            raise ValidationError("must be at most 1 MiB in total")
        return dict(value)


class PortMapping(RequestSchema):
    external = StrictInteger(required=True, validate=validate.Range(0, 65535))
    internal = StrictInteger(required=True, validate=validate.Range(1, 65535))


class PortMappings(fields.Field):
    """An array of PortMapping, a single object, or (in ``service``) a JSON string of either."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ValidationError("must be an array of {external, internal}") from None
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list):
            raise ValidationError("must be an array of {external, internal}")
        try:
            return PortMapping(many=True).load(value)
        except ValidationError as exc:
            raise ValidationError(exc.messages) from None


class CpuLimit(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ValidationError("must be a number of CPU cores") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.01 <= value <= 1024:
            raise ValidationError("must be a number of CPU cores between 0.01 and 1024")
        return float(value)


class MemoryLimit(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            match = MEMORY.match(value.strip())
            if not match:
                raise ValidationError("must be bytes or a size like 512m or 1Gi")
            value = int(match.group(1)) * MEMORY_UNITS[(match.group(2) or "").lower() or None]
        if isinstance(value, bool) or not isinstance(value, int) or value < MIN_MEMORY:
            raise ValidationError("must be at least 6 MiB")
        return value


def _text(limit=4096, **kwargs):
    return StrictString(validate=validate.Length(max=limit), **kwargs)


class ComposeServices(fields.Field):
    """``docker_compose_selected_services``: an array of names or a comma-separated string."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or len(value) > 64:
            raise ValidationError("must be an array of compose service names or a string")
        for name in value:
            if not isinstance(name, str) or not COMPOSE_SERVICE.match(name):
                raise ValidationError(f"invalid compose service name {str(name)[:64]!r}")
        return list(dict.fromkeys(value))


HEALTH_PATH = dict(validate=[validate.Length(max=1024),
                             FullMatch(r"/[^\x00-\x20\x7f]*", error="must begin with / and hold no space or control")])


class ServiceObject(RequestSchema):
    """The ``service`` object of docs/commands.md, `service.app.deploy` (aliases folded in)."""
    deployment_method = StrictString(validate=validate.OneOf(sorted(METHODS)))
    port_mappings = PortMappings()
    internal_port = StrictInteger(validate=validate.Range(1, 65535))
    exposed_port = StrictInteger(validate=validate.Range(0, 65535))
    install_command, build_command, start_command = _text(), _text(), _text()
    dockerfile_path = StrictString(validate=printable(maximum=1024))
    health_check_path = StrictString(**HEALTH_PATH)
    docker_compose_path = StrictString(validate=printable(1, 1024))
    docker_compose_service_mode = StrictString(validate=printable(1, 32))
    docker_compose_selected_services = ComposeServices()
    docker_compose_project_name = StrictString(validate=printable(1, 128))

    @pre_load
    def _aliases(self, data, **kwargs):
        data = dict(data) if isinstance(data, dict) else data
        if isinstance(data, dict):
            for alias, key in SERVICE_ALIASES:
                if alias in data and key not in data:
                    data[key] = data[alias]
        return data

    @post_load
    def _method(self, data, **kwargs):
        if "deployment_method" in data:
            data["deployment_method"] = METHODS[data["deployment_method"]]
        return data


class SourceFields(RequestSchema):
    service_uid = Uid(required=True)
    github_repo = StrictString(validate=printable(1, 2048))
    access_token = StrictString(validate=[validate.Length(max=4096),
                                          validate.Regexp(r"^\S*\Z", error="must not contain whitespace")])
    github_branch = Branch()
    commit_sha = Sha()
    last_commit_sha = Sha()
    service = fields.Nested(ServiceObject, load_default=dict)

    @validates_schema
    def _sha_alias(self, data, **kwargs):
        if data.get("commit_sha") and data.get("last_commit_sha") and data["commit_sha"] != data["last_commit_sha"]:
            raise ValidationError("commit_sha and last_commit_sha differ", "commit_sha")

    @post_load
    def _fold_sha(self, data, **kwargs):
        data["commit_sha"] = data.get("commit_sha") or data.pop("last_commit_sha", None)
        return data


class DeployRequest(SourceFields):
    deployment_uid = Uid(required=True)
    env_vars = EnvVars()
    port_mappings = PortMappings()
    internal_port = StrictInteger(validate=validate.Range(1, 65535))
    exposed_port = StrictInteger(validate=validate.Range(0, 65535))
    nixpacks_config = fields.Dict()
    install_command, build_command, start_command = _text(), _text(), _text()
    base_directory = StrictString(validate=printable(maximum=1024), load_default="")
    cpu_limit = CpuLimit()
    memory_limit = MemoryLimit()
    health_check_path = StrictString(**HEALTH_PATH)
    health_timeout_seconds = StrictNumber(load_default=120.0, validate=validate.Range(5, 1800))
    drain_seconds = StrictNumber(load_default=5.0, validate=validate.Range(0, 300))
    deployment_strategy = StrictString()      # accepted and ignored (docs/commands.md, `service.app.deploy`)


def _target_version(value):
    if not (IMAGE_REF.match(value) or COMMIT_PREFIX.match(value)):
        raise ValidationError("must be an image reference or a commit prefix of at least 6 hex characters")


class RollbackRequest(RequestSchema):
    service_uid = Uid(required=True)
    deployment_uid = Uid()
    target_version = StrictString(validate=_target_version)
    commit_sha = StrictString(validate=validate.Regexp(COMMIT_PREFIX, error="must be at least 6 hex characters"))
    force = StrictBoolean(load_default=False)
    env_vars = EnvVars()
    health_timeout_seconds = StrictNumber(load_default=120.0, validate=validate.Range(5, 1800))
    drain_seconds = StrictNumber(load_default=5.0, validate=validate.Range(0, 300))


class LogsFetchRequest(RequestSchema):
    service_uid = Uid(required=True)
    deployment_uid = Uid(required=True)
    lines = StrictInteger(load_default=100)
    since = StrictString(validate=validate.Length(max=64))
    log_type = StrictString(load_default="build", validate=validate.OneOf(["build", "deploy", "all"]))


class Offsets(RequestSchema):
    build = StrictInteger(validate=validate.Range(min=0))
    deploy = StrictInteger(validate=validate.Range(min=0))


class StreamStartRequest(RequestSchema):
    deployment_uid = Uid(required=True)
    service_uid = Uid()
    offsets = fields.Nested(Offsets, load_default=dict)
    include_steps = StrictBoolean(load_default=False)
    flush_interval_ms = StrictInteger(load_default=1000, validate=validate.Range(200, 10000))
    idle_timeout_seconds = StrictNumber(load_default=900.0, validate=validate.Range(10, 7200))


class StreamStopRequest(RequestSchema):
    deployment_uid = Uid(required=True)


def _checked_repo(ctx, request):
    """The repository host allow-list needs the settings: checked before any other work."""
    if request.get("github_repo") is not None:
        request = dict(request, github_repo=ctx.services.git.normalize_url(request["github_repo"]))
    return request


def deploy(ctx, request):
    return ctx.services.deploy.deploy(ctx, _checked_repo(ctx, request))


def install(ctx, request):
    return ctx.services.deploy.install(ctx, _checked_repo(ctx, request))


def rollback(ctx, request):
    return ctx.services.deploy.rollback(ctx, request)


def logs_fetch(ctx, request):
    return ctx.services.deploy.logs_fetch(request)


def stream_start(ctx, request):
    return ctx.services.deploy.stream_start(request)


def stream_stop(ctx, request):
    return ctx.services.deploy.stream_stop(request)


def _queued(request):
    """The in_progress/queued status of a deploy waiting behind its service's other operations."""
    return "update_deployment_status", {
        "deployment_uid": request["deployment_uid"], "service_uid": request["service_uid"],
        "status": "in_progress", "phase": "queued", "message": "waiting for the service's previous operation",
        "timestamp": int(time.time())}


DEPLOY = spec("service.app.deploy", queued_event=_queued)
INSTALL = spec("service.app.install")
ROLLBACK = spec("service.deploy.rollback")


def register(registry):
    registry.add("service.app.deploy", deploy, DeployRequest(), operation=DEPLOY)
    registry.add("service.app.install", install, SourceFields(), operation=INSTALL)
    registry.add("service.deploy.rollback", rollback, RollbackRequest(), operation=ROLLBACK)
    registry.add("service.deploy.logs.fetch", logs_fetch, LogsFetchRequest())
    registry.add("service.deploy.logs.stream.start", stream_start, StreamStartRequest())
    registry.add("service.deploy.logs.stream.stop", stream_stop, StreamStopRequest())
