"""The command catalogue, read from the registry and the request schemas.

``pulseup-agent commands [--json|--markdown]`` prints it; ``docs/commands.md`` holds its
markdown between two markers (``scripts/gen-commands.py`` rewrites it, a unit test checks
that the checked-in text is current). Nothing here is written by hand twice: fields, types,
defaults and deadlines come from the code the dispatcher runs; the one-line summaries and
the events each command may emit are the two tables below.
"""

import json
import sys

from marshmallow import fields as mfields, missing, validate

from agent.handlers import build_registry
from agent.protocol import events as event_catalogue

BEGIN, END = "<!-- catalogue:begin -->", "<!-- catalogue:end -->"
PLAIN_DEADLINE = "COMMAND_TIMEOUT (30 s)"

SUMMARY = {
    "agent.command.execute": "Run one command of the allow-listed catalogue (`agent.command.list`).",
    "agent.command.list": "The commands `agent.command.execute` accepts.",
    "agent.config_updated": "A special event: sets the automatic-update switch (`auto_updates_enabled`).",
    "agent.hardware.info": "The host's HardwareInfo (CPU, memory, storage, network, OS).",
    "agent.logs.fetch": "Recent lines of the agent's own log.",
    "agent.operations.cancel": "Cancel a running or queued operation by operation_id or call_id.",
    "agent.operations.list": "The operations running or queued now.",
    "agent.ping": "Echo the request as received ({} when absent, null when null); answered inline.",
    "agent.uninstall": "Flag the agent for removal by the external uninstaller (through the supervisor).",
    "agent.update.apply": "Install a newer agent package (through the supervisor).",
    "agent.update.check": "Whether a newer agent package is available.",
    "database.backup.automation.get": "A database's backup schedule and retention.",
    "database.backup.automation.update": "Set a database's backup schedule, storage path and retention.",
    "database.backup.create": "Back a database up (dump, compress, checksum, manifest).",
    "database.backup.download": "Upload a backup file to the control plane.",
    "database.backup.list": "The backups of a database, newest first.",
    "database.backup.restore": "Restore a database from a backup, after a safety backup.",
    "database.backup.storage.verify": "Check that a storage path is allowed and writable.",
    "database.deploy": "Create or update a managed database container.",
    "database.logs.fetch": "Recent log lines of a database container.",
    "monitoring.alerts.setup": "Replace the alert rules.",
    "monitoring.container.metrics": "Metrics of every managed container.",
    "monitoring.start": "Start the metrics sampler and alert evaluation.",
    "monitoring.status": "The sampler's state and the connection and outbox figures.",
    "monitoring.stop": "Stop the metrics sampler and alert evaluation.",
    "server.ssh_key.add": "Add a public key to a managed user's authorized_keys (supervisor).",
    "server.ssh_key.remove": "Remove a public key from a managed user's authorized_keys (supervisor).",
    "server.stats.live": "Host CPU, memory, disk, network and load right now.",
    "service.app.deploy": "Deploy an app: fetch the source, build, start, health-check, switch traffic.",
    "service.app.install": "Clone an app's source and detect its build method, without deploying.",
    "service.container.stats.live": "Live metrics of one service's container.",
    "service.delete": "Remove a service: its containers, images, routes and files.",
    "service.deploy.logs.fetch": "Build or deploy log of one deployment.",
    "service.deploy.logs.stream.start": "Stream a deployment's logs as deployment_log_chunk events.",
    "service.deploy.logs.stream.stop": "Stop a deployment log stream.",
    "service.deploy.rollback": "Run a previous image of the service again.",
    "service.domain.manage": "Add, remove or inspect a service's domain on the proxy.",
    "service.logs.fetch": "Recent log lines of a service's container.",
    "service.logs.stream.start": "Stream a service's container logs as container_log events.",
    "service.logs.stream.stop": "Stop a service log stream.",
    "service.restart": "Restart a service's container.",
    "service.start": "Start a service's container.",
    "service.status.get": "A service's status, from its container's state and health.",
    "service.stop": "Stop a service's container.",
}

EMITS = {
    "service.app.deploy": ("update_deployment_status", "deployment_heartbeat", "update_service_status",
                           "update_docker_config", "update_nixpacks_config"),
    "service.app.install": ("update_service_status", "update_docker_config", "update_nixpacks_config"),
    "service.deploy.rollback": ("rollback_status_update",),
    "service.start": ("update_service_status",),
    "service.stop": ("update_service_status",),
    "service.restart": ("update_service_status",),
    "service.domain.manage": ("domain_status_update",),
    "service.deploy.logs.stream.start": ("deployment_log_chunk",),
    "service.logs.stream.start": ("container_log",),
    "database.deploy": ("update_service_status",),
    "database.backup.create": ("backup_status_update", "backup_progress_update"),
    "database.backup.restore": ("update_service_status", "backup_status_update", "backup_progress_update"),
    "database.backup.download": ("backup_download_status",),
    "monitoring.start": ("monitoring_alert", "container_stopped"),
}


def _type(field, depth=0):
    if isinstance(field, mfields.List):
        return f"list of {_type(field.inner, depth + 1)}"
    if isinstance(field, mfields.Nested):
        return "object"
    for kind, name in ((mfields.Boolean, "boolean"), (mfields.Integer, "integer"), (mfields.Float, "number"),
                       (mfields.String, "string"), (mfields.Dict, "object")):
        if isinstance(field, kind):
            return name
    return "any" if type(field) in (mfields.Field, mfields.Raw) else type(field).__name__


def _constraints(field):
    found = []
    validators = list(field.validators)
    for item in list(validators):
        if isinstance(item, validate.And):
            validators.extend(item.validators)
    for item in validators:
        if isinstance(item, validate.OneOf):
            found.append("one of " + ", ".join(str(c) for c in item.choices))
        elif isinstance(item, validate.Range):
            found.append(_bounds("value", item.min, item.max))
        elif isinstance(item, validate.Length):
            found.append(_bounds("length", item.min, item.max))
        elif isinstance(item, validate.Regexp) and item.regex.pattern not in ("[^\\x00-\\x1f\\x7f]*",):
            found.append("pattern " + item.regex.pattern.removesuffix("\\Z"))
    if any(isinstance(v, validate.Regexp) and v.regex.pattern == "[^\\x00-\\x1f\\x7f]*" for v in validators):
        found.append("no control characters")
    if field.metadata.get("doc"):
        found.append(field.metadata["doc"])
    return [text for text in found if text]


def _bounds(what, low, high):
    if low is None and high is None:
        return ""
    if high is None:
        return f"{what} >= {low}"
    return f"{what} <= {high}" if low is None else f"{what} {low}..{high}"


def _default(field):
    value = field.load_default
    if value is missing:
        return None
    return "(computed)" if callable(value) else value


def describe_fields(schema, prefix=""):
    """One dict per field (nested objects flattened as ``parent.child``, lists as ``parent[]``)."""
    rows = []
    for name, field in sorted(schema.fields.items()):
        key = prefix + (field.data_key or name)
        rows.append({"name": key, "type": _type(field), "required": bool(field.required),
                     "default": _default(field), "nullable": bool(field.allow_none),
                     "constraints": _constraints(field)})
        inner = field.inner if isinstance(field, mfields.List) else field
        if isinstance(inner, mfields.Nested) and prefix.count(".") < 3:
            suffix = "[]." if inner is not field else "."
            rows.extend(describe_fields(inner.schema, key + suffix))
    return rows


def _operation(spec):
    if spec is None:
        return None
    default = spec.timeout_default
    shown = default({}) if callable(default) else default
    return {"kind": spec.kind, "timeout_default": shown, "timeout_default_varies": callable(default),
            "timeout_max": spec.timeout_max, "serialised": spec.lock_key is not None,
            "cancellable": spec.cancellable, "preempting": spec.preempting,
            "read_only_forms": spec.applies is not None}


def describe(registry=None):
    """The catalogue as plain data: a list of command dicts and a list of event dicts."""
    registry = registry or build_registry()
    commands = []
    for name in registry.names():
        command = registry.get(name)
        commands.append({
            "name": name, "summary": SUMMARY.get(name, ""),
            "fields": describe_fields(command.schema) if command.schema is not None else [],
            "validated": command.schema is not None, "operation": _operation(command.operation),
            "emits": list(EMITS.get(name, ())), "raw": command.raw, "privileged": command.privileged,
            "wrappable": command.wrappable})
    events = [{"name": spec.name, "durable": spec.durable, "when": spec.when,
               "fields": describe_fields(spec.schema)} for spec in event_catalogue.CATALOGUE.values()]
    return {"commands": commands, "events": events}


def commands_main(args, out=None):
    """``pulseup-agent commands``: text (default), ``--json`` or ``--markdown``."""
    out = out or sys.stdout
    data = describe()
    if getattr(args, "json", False):
        out.write(json.dumps(data, indent=1, default=str) + "\n")
    elif getattr(args, "markdown", False):
        out.write(markdown(data) + "\n")
    else:
        out.write(text(data))
    return 0


# -- rendering ------------------------------------------------------------------------

def _deadline(operation):
    if operation is None:
        return PLAIN_DEADLINE
    varies = " (depends on the request)" if operation["timeout_default_varies"] else ""
    return f"{operation['timeout_default']:g} s{varies}, at most {operation['timeout_max']:g} s"


def _flags(command):
    operation = command["operation"]
    flags = []
    if operation is not None:
        flags.append(f"operation `{operation['kind']}`")
        flags.append("serialised per key" if operation["serialised"] else "not serialised")
        flags += [label for key, label in (("cancellable", "cancellable"), ("preempting", "pre-empting"),
                                           ("read_only_forms", "read-only forms run as plain commands"))
                  if operation[key]]
    flags += [label for key, label in (("raw", "raw (data passed verbatim, answered inline)"),
                                       ("privileged", "privileged (through the supervisor)")) if command[key]]
    if not command["wrappable"]:
        flags.append("not reachable through the `command`/`call` wrappers")
    return flags


def _cell(value):
    return str(value).replace("|", "\\|").replace("\n", " ")


def _field_rows(rows):
    lines = ["| Field | Type | Required | Default | Constraints |", "|---|---|---|---|---|"]
    for row in rows:
        default = "" if row["default"] is None else f"`{json.dumps(row['default'], default=str)}`"
        default = "computed" if row["default"] == "(computed)" else default
        kind = row["type"] + (" or null" if row["nullable"] else "")
        lines.append(f"| `{row['name']}` | {_cell(kind)} | {'yes' if row['required'] else 'no'} | "
                     f"{_cell(default)} | {_cell('; '.join(row['constraints']))} |")
    return lines


def _command_markdown(command):
    lines = [f"### `{command['name']}`", ""]
    if command["summary"]:
        lines += [command["summary"], ""]
    lines.append(f"- Deadline: {_deadline(command['operation'])}")
    flags = _flags(command)
    if flags:
        lines.append("- " + "; ".join(flags))
    if command["emits"]:
        lines.append("- Emits: " + ", ".join(f"`{name}`" for name in command["emits"]))
    lines.append("")
    if command["fields"]:
        lines += _field_rows(command["fields"]) + [""]
    elif command["validated"]:
        lines += ["No fields.", ""]
    else:
        lines += ["The request is not validated.", ""]
    return lines


def markdown(data):
    """The generated part of docs/commands.md (between BEGIN and END)."""
    lines = ["## Commands", "",
             "Every command also accepts `timeout_seconds` (alias `_timeout_s`): a positive number up to "
             "its maximum deadline (docs/commands.md, \"Operations\").", ""]
    for command in data["commands"]:
        lines += _command_markdown(command)
    lines += ["## Events", "",
              "Durable events wait in the outbox while disconnected; the others are sent only while "
              "connected (docs/protocol.md, \"Outbound events\").", ""]
    for event in data["events"]:
        lines += [f"### `{event['name']}`", "", f"{'Durable' if event['durable'] else 'Droppable'}: "
                  f"{event['when']}.", ""] + _field_rows(event["fields"]) + [""]
    return "\n".join(lines).rstrip("\n")


def text(data):
    """A short listing for a terminal: one line per command."""
    width = max(len(c["name"]) for c in data["commands"])
    lines = [f"{c['name']:<{width}}  {_deadline(c['operation']):<40}  {c['summary']}" for c in data["commands"]]
    return "\n".join(lines) + "\n"
