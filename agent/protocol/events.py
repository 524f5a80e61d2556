"""The catalogue of outbound events: one schema and one delivery rule per event.

Every event the agent sends is declared here once, with the marshmallow schema of
its ``data`` and whether it is durable (kept in the outbox while disconnected and
sent in order after the next authentication) or droppable (sent only while
connected). ``docs/commands.md`` ("Events") is generated from this table, and the
dispatcher takes an event's durability from it, never from the caller.

A ``data`` that does not match its schema is a bug in the agent, not bad input. In
production (:func:`strict` false) it is logged once per event name and still sent,
because the control plane tolerates an extra or missing field better than a lost
status. With ``PULSEUP_STRICT_EVENTS=1`` (set by the test suite) it raises
:class:`EventSchemaError`, so a test that makes the agent emit a non-conforming
event fails (docs/protocol.md, "Outbound events").
"""

import os
from dataclasses import dataclass

from marshmallow import RAISE, Schema, fields, validate

from agent import log
from agent.protocol import envelope
from agent.protocol.fields import StrictBoolean, StrictInteger, StrictNumber

_log = log.get("events")
STRICT_ENV = "PULSEUP_STRICT_EVENTS"
_reported = set()          # event names whose violation was logged already


class EventSchemaError(Exception):
    """An outbound event whose name or data is not what the catalogue declares (a bug)."""


@dataclass(frozen=True)
class EventSpec:
    name: str
    schema: Schema
    durable: bool
    when: str                       # one line for docs/commands.md


def _str(required=False, allow_none=None, **kwargs):
    return fields.String(required=required, allow_none=(not required) if allow_none is None else allow_none,
                         **kwargs)


def _int(required=False, **kwargs):
    return StrictInteger(required=required, allow_none=not required, **kwargs)


def _one_of(*values, required=True):
    return fields.String(required=required, validate=validate.OneOf(values))


class _Data(Schema):
    class Meta:
        unknown = RAISE


SERVICE_STATUSES = ("pending", "running", "stopped", "failed", "deploying", "restarting", "ready", "stopping")
DEPLOYMENT_STATUSES = ("in_progress", "completed", "failed", "cancelled")
PHASES = ("queued", "fetch_source", "build", "deploy", "health_check", "switch_traffic", "cleanup")


class RegisterHardwareInfo(_Data):
    hostname = _str(required=True)
    default_name = _str(required=True)
    ip_address = _str(required=True)                    # public IP or "unknown"
    private_ip = _str(required=True)
    cpu_model = _str(required=True)
    cpu_arch = _str(required=True)
    cpu_cores = _int(required=True)                     # physical
    cpu_count = _int(required=True)                     # logical
    ram_gb = StrictNumber(required=True)
    storage_gb = StrictNumber(required=True)
    os_name = _str(required=True)
    os_version = _str(required=True)
    kernel_version = _str(required=True)
    metadata = fields.Dict(required=True)               # the HardwareInfo object plus default_name
    collected_at = _str(required=True, metadata={"doc": "RFC 3339"})


class UpdateServiceStatus(_Data):
    service_uid = _str(required=True)
    status = _one_of(*SERVICE_STATUSES)
    error = _str()
    message = _str()
    timestamp = _str(required=True, metadata={"doc": "RFC 3339"})


class UpdateDeploymentStatus(_Data):
    deployment_uid = _str(required=True)
    service_uid = _str(required=True, allow_none=True)  # unknown for a record without one
    status = _one_of(*DEPLOYMENT_STATUSES)
    phase = fields.String(validate=validate.OneOf(PHASES))
    message = _str()
    error = _str()
    code = _str()
    commit_sha = _str()
    commit_message = _str()
    image = _str()
    container_name = _str()
    deployment_version = fields.Raw(allow_none=True)
    timestamp = _int(required=True, metadata={"doc": "Unix seconds"})


class DeploymentHeartbeat(_Data):
    deployment_uid = _str(required=True)
    timestamp = _int(required=True, metadata={"doc": "Unix seconds"})


class DeploymentLogChunk(_Data):
    deployment_uid = _str(required=True)
    service_uid = _str(required=True, allow_none=True)
    timestamp = _int(required=True, metadata={"doc": "Unix seconds"})
    sequence = _int(required=True)
    start_offset = _int(required=True)
    end_offset = _int(required=True)
    log_type = fields.String(validate=validate.OneOf(("build", "deploy")))
    chunk = _str()
    size = _int()
    steps = fields.List(fields.Raw())
    final = StrictBoolean()
    reset = StrictBoolean()
    offsets = fields.Dict(keys=fields.String(), values=StrictInteger())   # with final


class ContainerLog(_Data):
    service_uid = _str(required=True)
    message = _str(required=True)
    type = _one_of("log", "info", "error")
    timestamp = _int(required=True, metadata={"doc": "Unix seconds"})
    container_name = _str()
    stream = fields.String(validate=validate.OneOf(("stdout", "stderr")))


class ContainerStopped(_Data):
    container_id = _str(required=True)
    container_name = _str(required=True)
    timestamp = _str(required=True, metadata={"doc": "RFC 3339"})
    service_uid = _str()                                # from Docker events
    deployment_uid = _str()
    action = _str()
    exit_code = _str()
    expected = StrictBoolean()
    alert_id = _str()                                   # from a container_down alert
    severity = _str()
    message = _str()


class MonitoringAlert(_Data):
    id = _str(required=True)
    rule_id = _str(required=True)
    rule_name = _str(required=True)
    container_id = _str(required=True)
    container_name = _str(required=True)
    severity = _one_of("info", "warning", "error", "critical")
    message = _str(required=True)
    timestamp = _str(required=True, metadata={"doc": "RFC 3339"})
    resolved = StrictBoolean(required=True)


class RollbackStatusUpdate(_Data):
    service_uid = _str(required=True)
    status = _one_of("rolling_back", "running", "failed")
    message = _str(required=True)
    timestamp = _int(required=True, metadata={"doc": "Unix seconds"})
    rolled_back_to = _str()
    code = _str()


class BackupProgressUpdate(_Data):
    backup_uid = _str(required=True)
    service_uid = _str(required=True)
    percent = StrictNumber(required=True)
    message = _str(required=True)
    status = _one_of("in_progress")
    bytes_done = _int()
    bytes_total = _int()
    eta_seconds = StrictNumber(allow_none=True)


class BackupStatusUpdate(_Data):
    backup_uid = _str(required=True)
    service_uid = _str(required=True, allow_none=True)
    status = _one_of("in_progress", "completed", "failed")
    backup_type = _one_of("manual", "scheduled", "pre_restore")
    started_at = _str(metadata={"doc": "RFC 3339"})
    file_path = _str()
    file_size = _int()
    size = _int()
    sha256 = _str()
    manifest_path = _str()
    error_message = _str()
    error_code = _str()


class BackupDownloadStatus(_Data):
    backup_uid = _str(required=True)
    service_uid = _str(required=True)
    status = _one_of("uploading", "upload_completed", "upload_failed")
    bytes_sent = _int()
    bytes_total = _int()
    error_message = _str()


class DomainStatusUpdate(_Data):
    service_uid = _str(required=True)
    domain = _str(required=True)
    ssl_status = _one_of("pending", "dns_pending", "active", "disabled")
    upstream_container = _str(required=True, allow_none=True)
    last_applied = _str(required=True, allow_none=True)
    checked_at = _str()
    ssl_error = _str()
    error = _str()                                      # the apply that failed


class UpdateDockerConfig(_Data):
    service_uid = _str(required=True)
    dockerfile_paths = fields.List(fields.String(), required=True)


class UpdateNixpacksConfig(_Data):
    service_uid = _str(required=True)
    config = fields.Dict(required=True)


def _spec(name, schema, durable, when):
    return name, EventSpec(name, schema(), durable, when)


CATALOGUE = dict([
    _spec("register_hardware_info", RegisterHardwareInfo, False,
          "after every authentication (sent again on each connect)"),
    _spec("update_service_status", UpdateServiceStatus, True,
          "lifecycle commands, database deploy/restore, install failure, the container event watcher"),
    _spec("update_deployment_status", UpdateDeploymentStatus, True,
          "deployment progress: in_progress (with phase) then one of completed, failed, cancelled"),
    _spec("deployment_heartbeat", DeploymentHeartbeat, False,
          "every 20 s while a deployment runs"),
    _spec("deployment_log_chunk", DeploymentLogChunk, True,
          "a deployment log stream (service.deploy.logs.stream.start); retried, offsets do not advance"),
    _spec("container_log", ContainerLog, False, "a service log stream (service.logs.stream.start)"),
    _spec("container_stopped", ContainerStopped, True,
          "a managed container dies, stops, is killed, runs out of memory or turns unhealthy; "
          "or a container_down alert fires"),
    _spec("monitoring_alert", MonitoringAlert, True, "an alert fires or resolves"),
    _spec("rollback_status_update", RollbackStatusUpdate, True, "rollback start and end"),
    _spec("backup_progress_update", BackupProgressUpdate, False, "during a backup"),
    _spec("backup_status_update", BackupStatusUpdate, True,
          "start and end of every manual, scheduled and pre-restore backup"),
    _spec("backup_download_status", BackupDownloadStatus, True, "upload start, progress and end"),
    _spec("domain_status_update", DomainStatusUpdate, True,
          "a domain's ssl_status changes, or an apply for it succeeds or fails"),
    _spec("update_docker_config", UpdateDockerConfig, True, "source preparation finds Dockerfiles"),
    _spec("update_nixpacks_config", UpdateNixpacksConfig, True, "first clone of a Nixpacks service"),
])


def strict():
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


def problems(event, data):
    """What is wrong with ``data`` as the ``event``'s payload, as a message; None when it fits."""
    spec = CATALOGUE.get(event)
    if spec is None:
        return "is not in the event catalogue"
    if not isinstance(data, dict):
        return f"data must be an object, not {type(data).__name__}"
    errors = spec.schema.validate(data)
    return f"data does not match its schema: {errors}" if errors else None


def check(event, data):
    """Raise EventSchemaError in strict mode, else log the first violation of each event."""
    problem = problems(event, data)
    if problem is None:
        return
    if strict():
        raise EventSchemaError(f"outbound event {event}: {problem}")
    if event not in _reported:
        _reported.add(event)
        _log.error("outbound event %s %s (sent anyway; reported once)", event, problem)


def check_if_strict(event, data):
    """For the places events pass before the dispatcher (test doubles sit behind them)."""
    if strict():
        check(event, data)


def is_durable(event):
    spec = CATALOGUE.get(event)
    return spec is not None and spec.durable


def prepare(event, data):
    """``(frame, durable)`` for one outbound event, checked against the catalogue."""
    check(event, data)
    return envelope.event_frame(event, data), is_durable(event)
