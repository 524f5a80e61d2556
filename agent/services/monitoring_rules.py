"""Alert rules (docs/commands.md, "Shapes" and "Monitoring"): their schema, metric values, evaluation.

Evaluation is per (rule, container): the condition must hold for the rule's ``duration``
before it fires; while it keeps holding it fires again at most once per cooldown; when it
clears after firing, the alert resolves (``resolved: true``). Pure logic: the caller gives
the clock and emits what :meth:`Evaluator.evaluate` returns.
"""

import math
import operator
import re
import uuid

from marshmallow import ValidationError, fields, post_load, validate, validates, validates_schema

from agent.protocol.fields import RequestSchema, StrictBoolean, StrictInteger, StrictNumber, StrictString
from agent.values import rfc3339

METRIC_TYPES = ("cpu_usage", "memory_usage", "memory_limit", "disk_usage", "network_errors",
                "container_down", "container_restart", "response_time", "health_check")
OPERATORS = {"gt": operator.gt, "lt": operator.lt, "gte": operator.ge, "lte": operator.le,
             "eq": operator.eq, "ne": operator.ne}
SEVERITIES = ("info", "warning", "error", "critical")
MAX_RULES = 100


class NotificationSchema(RequestSchema):
    websocket_event = StrictBoolean(load_default=True)
    log_event = StrictBoolean(load_default=False)
    webhook_url = StrictString(allow_none=True, validate=validate.Length(max=2048))  # stored, never called


def _default_notification():
    return {"websocket_event": True, "log_event": False}


class AlertRuleSchema(RequestSchema):
    id = StrictString(validate=validate.Length(min=1, max=128))
    name = StrictString(required=True, validate=validate.Length(min=1, max=256))
    description = StrictString(allow_none=True, validate=validate.Length(max=2048))
    metric_type = StrictString(required=True, validate=validate.OneOf(METRIC_TYPES))
    threshold = StrictNumber(required=True)
    operator = StrictString(required=True, validate=validate.OneOf(list(OPERATORS)))
    duration = StrictInteger(validate=validate.Range(min=0))
    duration_seconds = StrictNumber(validate=validate.Range(min=0))
    severity = StrictString(load_default="warning", validate=validate.OneOf(SEVERITIES))
    container_filter = StrictString(allow_none=True, validate=validate.Length(max=256))
    enabled = StrictBoolean(load_default=True)
    last_triggered = StrictString(allow_none=True)
    notification_config = fields.Nested(NotificationSchema, load_default=_default_notification)

    @validates("threshold")
    def _finite(self, value, **kwargs):
        if not math.isfinite(value):
            raise ValidationError("must be a finite number")

    @validates("container_filter")
    def _regex(self, value, **kwargs):
        if value:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValidationError(f"invalid regular expression: {exc}") from None

    @post_load
    def _normalise(self, rule, **kwargs):
        # docs/commands.md, "Monitoring": duration_seconds wins over duration when both are given
        if "duration_seconds" in rule:
            rule["duration"] = int(round(rule["duration_seconds"] * 1e9))
        rule["duration"] = rule.get("duration", 0)
        rule["duration_seconds"] = rule["duration"] / 1e9
        rule.setdefault("id", str(uuid.uuid4()))
        return rule


class AlertsSetupSchema(RequestSchema):
    rules = fields.List(fields.Nested(AlertRuleSchema), required=True,
                        validate=validate.Length(max=MAX_RULES, error=f"at most {MAX_RULES} rules"))

    @validates_schema(skip_on_field_errors=True)
    def _unique(self, data, **kwargs):
        ids = [rule["id"] for rule in data["rules"]]
        if len(ids) != len(set(ids)):
            raise ValidationError("rule ids must be unique", "rules")


def default_rules():
    """Installed by monitoring.start when no rules exist (docs/commands.md, "Monitoring")."""
    raw = [
        {"id": "cpu-high", "name": "High CPU usage", "metric_type": "cpu_usage",
         "threshold": 80, "operator": "gt", "duration_seconds": 60, "severity": "warning"},
        {"id": "memory-high", "name": "High memory usage", "metric_type": "memory_usage",
         "threshold": 90, "operator": "gt", "duration_seconds": 60, "severity": "error"},
        {"id": "container-down", "name": "Container down", "metric_type": "container_down",
         "threshold": 1, "operator": "eq", "duration_seconds": 0, "severity": "critical"},
    ]
    return [AlertRuleSchema().load(rule) for rule in raw]


def metric_values(metrics, previous, explicit_memory_limit, host_disk_percent):
    """metric_type -> value for one container sample (None: not measurable, never matches).

    ``previous`` is the container's former sample (or None) for the "since the previous
    sample" counters."""
    network = metrics["network"]
    errors = network["rx_errors"] + network["tx_errors"]
    restarts = metrics.get("restart_count", 0)
    response = metrics.get("response_time")
    memory = metrics["memory"]
    return {
        "cpu_usage": metrics["cpu"]["usage"],
        "memory_usage": memory["percent"],
        "memory_limit": memory["usage"] / explicit_memory_limit * 100.0 if explicit_memory_limit else None,
        "disk_usage": host_disk_percent,
        "network_errors": errors - _previous_errors(previous, errors),
        "container_down": 0 if metrics.get("state") == "running" else 1,
        "container_restart": restarts - (previous or {}).get("restart_count", restarts),
        "response_time": response["response_time"] / 1e6 if response and "status_code" in response else None,
        "health_check": 1 if metrics["health"] == "unhealthy" else 0,
    }


def _previous_errors(previous, current):
    if not previous:
        return current
    network = previous["network"]
    return network["rx_errors"] + network["tx_errors"]


def applies(rule, container_name, is_proxy):
    if not rule["enabled"]:
        return False
    if rule["metric_type"] == "container_down" and is_proxy:
        return False
    pattern = rule.get("container_filter")
    return not pattern or re.search(pattern, container_name) is not None


class Evaluator:
    """Alert state per (rule id, container id); ``last_fired`` survives restarts through
    :meth:`cooldowns` / :meth:`restore`."""

    def __init__(self, cooldown=300.0):
        self.cooldown = cooldown
        self._states = {}

    def evaluate(self, rule, container_id, container_name, value, now):
        """The alert records (``monitoring_alert`` data) this sample produces: [], a new
        alert, or a resolution."""
        key = (rule["id"], container_id)
        state = self._states.setdefault(key, {"since": None, "firing": None, "last_fired": None})
        holds = value is not None and OPERATORS[rule["operator"]](value, rule["threshold"])
        if not holds:
            state["since"] = None
            firing, state["firing"] = state["firing"], None
            return [_alert(firing["id"], rule, container_id, container_name, value, now, True)] if firing else []
        if state["since"] is None:
            state["since"] = now
        due = now - state["since"] >= rule["duration"] / 1e9
        cooled = state["last_fired"] is None or now - state["last_fired"] >= self.cooldown
        if not (due and cooled):
            return []
        state["last_fired"] = now
        state["firing"] = _alert(str(uuid.uuid4()), rule, container_id, container_name, value, now, False)
        return [state["firing"]]

    def forget(self, keep_rule_ids=None, keep_container_ids=None):
        """Drop states of removed rules or vanished containers."""
        for rule_id, container_id in list(self._states):
            if (keep_rule_ids is not None and rule_id not in keep_rule_ids
                    or keep_container_ids is not None and container_id not in keep_container_ids):
                del self._states[(rule_id, container_id)]

    def active(self):
        return sum(1 for state in self._states.values() if state["firing"])

    def cooldowns(self):
        return {f"{r}|{c}": s["last_fired"] for (r, c), s in self._states.items() if s["last_fired"]}

    def restore(self, cooldowns):
        for key, stamp in (cooldowns or {}).items():
            rule_id, _, container_id = key.partition("|")
            if isinstance(stamp, (int, float)) and container_id:
                self._states[(rule_id, container_id)] = {"since": None, "firing": None, "last_fired": stamp}


def _alert(alert_id, rule, container_id, container_name, value, now, resolved):
    if resolved:
        message = f"{rule['name']}: resolved on {container_name}"
    else:
        shown = "n/a" if value is None else f"{value:g}"
        message = (f"{rule['name']}: {rule['metric_type']} is {shown} "
                   f"({rule['operator']} {rule['threshold']:g}) on {container_name}")
    return {"id": alert_id, "rule_id": rule["id"], "rule_name": rule["name"],
            "container_id": container_id, "container_name": container_name,
            "severity": rule["severity"], "message": message, "timestamp": rfc3339(now),
            "resolved": resolved}
