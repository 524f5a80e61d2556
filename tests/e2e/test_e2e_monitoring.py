"""monitoring.* through the wire (docs/commands.md, "Monitoring"): the loop started after authentication, its
rules replaced, an alert fired for a managed container that is down (monitoring_alert and
container_stopped on the event stream), and the latest samples."""

import re

import pytest

from tests.e2e.apps import unique
from tests.e2e.wire import RFC3339

covers = pytest.mark.covers


@pytest.fixture
def down_container(docker_client, base_image):
    """A managed container that was created and never started (container_down = 1)."""
    uid = unique("e2e-mon")
    container = docker_client.containers.create(base_image, ["sleep", "600"], name=f"pulseup-app-{uid}-v0001",
                                                labels={"pulseup.managed": "true", "pulseup.service_uid": uid})
    yield container
    container.remove(force=True)


@covers("monitoring.status", "monitoring.start", "monitoring.stop", "monitoring.alerts.setup",
        "monitoring.container.metrics", outcome="success")
def test_rules_alert_and_metrics(wire, down_container):
    status = wire.ok("monitoring.status")
    assert set(status) >= {"enabled", "active_containers", "total_alerts", "active_alerts", "last_metrics_collection",
                           "metrics_errors", "health_check_errors", "uptime", "uptime_seconds"}
    assert status["enabled"] is True and isinstance(status["uptime"], int)     # started after authentication
    assert status["uptime_seconds"] == pytest.approx(status["uptime"] / 1e9)
    assert wire.ok("monitoring.stop") == {"message": "monitoring stopped successfully", "changed": True}
    assert wire.ok("monitoring.stop") == {"message": "monitoring not running", "changed": False}
    assert wire.ok("monitoring.status")["enabled"] is False
    rule = {"id": "e2e-down", "name": "e2e container down", "metric_type": "container_down", "threshold": 1,
            "operator": "eq", "duration_seconds": 0, "severity": "critical", "enabled": True,
            "container_filter": "^" + re.escape(down_container.name) + "$",
            "notification_config": {"websocket_event": True, "log_event": True}}
    cpu = {"name": "e2e cpu", "metric_type": "cpu_usage", "threshold": 1000, "operator": "gt", "duration": 0,
           "severity": "info"}
    assert wire.ok("monitoring.alerts.setup", {"rules": [rule, cpu]}) == {"message": "alerts configured successfully",
                                                                          "rule_count": 2}
    mark = wire.mark()
    assert wire.ok("monitoring.start") == {"message": "monitoring started successfully", "changed": True}
    assert wire.ok("monitoring.start") == {"message": "monitoring already started", "changed": False}
    alert = wire.wait_event("monitoring_alert", lambda e: e["container_name"] == down_container.name, mark, timeout=60)
    assert alert["rule_id"] == "e2e-down" and alert["rule_name"] == "e2e container down"
    assert alert["container_id"] == down_container.id and alert["severity"] == "critical"
    assert alert["resolved"] is False and alert["message"] and alert["id"] and re.match(RFC3339, alert["timestamp"])
    stopped = wire.wait_event("container_stopped", lambda e: e.get("alert_id") == alert["id"], mark, timeout=30)
    assert stopped["container_id"] == down_container.id and stopped["container_name"] == down_container.name
    assert stopped["severity"] == "critical" and stopped["message"] == alert["message"]
    metrics = wire.ok("monitoring.container.metrics")
    sample = metrics[down_container.id]
    assert sample["container_name"] == down_container.name and sample["status"] == "pending"
    assert sample["pulseup_managed"] is True and re.match(RFC3339, sample["timestamp"])
    assert set(sample) >= {"cpu", "memory", "network", "disk", "health", "uptime", "uptime_seconds"}
    after = wire.ok("monitoring.status")
    assert after["enabled"] is True and after["total_alerts"] >= 1 and after["active_alerts"] >= 1
    assert re.match(RFC3339, after["last_metrics_collection"])


@covers("monitoring.status", "monitoring.start", "monitoring.stop", "monitoring.alerts.setup",
        "monitoring.container.metrics", outcome="refusal")
def test_monitoring_refusals(wire):
    for command in ("monitoring.status", "monitoring.start", "monitoring.stop", "monitoring.container.metrics"):
        wire.refused(command, "not an object", "invalid_argument")
    base = {"name": "r", "metric_type": "cpu_usage", "threshold": 1, "operator": "gt", "duration": 0,
            "severity": "info"}
    wire.refused("monitoring.alerts.setup", {"rules": [dict(base, container_filter="([")]}, "invalid_argument")
    wire.refused("monitoring.alerts.setup", {"rules": [dict(base, metric_type="temperature")]}, "invalid_argument")
    wire.refused("monitoring.alerts.setup", {"rules": [dict(base, operator="between")]}, "invalid_argument")
    wire.refused("monitoring.alerts.setup", {"rules": [base] * 101}, "invalid_argument")
    wire.refused("monitoring.alerts.setup", {}, "invalid_argument", field="rules")
