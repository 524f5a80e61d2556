import json
import os
import stat

import gevent
import pytest

from agent.errors import AgentError
from agent.handlers import monitoring as monitoring_handlers
from agent.services.context import CallContext
from agent.handlers.registry import Registry
from agent.protocol.fields import load_request
from agent.services.monitoring import MonitoringService
from agent.services.monitoring_rules import AlertRuleSchema, Evaluator, default_rules, metric_values
from tests.unit.test_docker_fakes import (  # noqa: F401 (fixtures)
    app, cfg, database, docker_service, fake_client, services)


def rule(**overrides):
    raw = {"id": "r1", "name": "CPU", "metric_type": "cpu_usage", "threshold": 50, "operator": "gt",
           "duration_seconds": 10, "severity": "warning"}
    raw.update(overrides)
    return AlertRuleSchema().load(raw)


def call(name, services, data=None):
    registry = Registry()
    monitoring_handlers.register(registry)
    command = registry.get(name)
    return command.func(CallContext(services, name), load_request(command.schema, data or {}))


# -- rules --------------------------------------------------------------------------

def test_rule_schema_normalises_durations_and_defaults():
    loaded = rule(duration=5_000_000_000)          # duration_seconds wins when both are given
    assert loaded["duration"] == 10_000_000_000 and loaded["duration_seconds"] == 10.0
    plain = AlertRuleSchema().load({"name": "x", "metric_type": "container_down", "threshold": 1, "operator": "eq"})
    assert plain["duration"] == 0 and plain["enabled"] is True and plain["id"]
    assert plain["notification_config"] == {"websocket_event": True, "log_event": False}


@pytest.mark.parametrize("bad,field", [
    ({"metric_type": "bogus"}, "rules.0.metric_type"),
    ({"container_filter": "("}, "rules.0.container_filter"),
    ({"operator": "approx"}, "rules.0.operator"),
    ({"threshold": "80"}, "rules.0.threshold"),
])
def test_alerts_setup_rejects_invalid_rules(services, bad, field):
    raw = {"name": "x", "metric_type": "cpu_usage", "threshold": 1, "operator": "gt", **bad}
    with pytest.raises(AgentError) as info:
        call("monitoring.alerts.setup", services, {"rules": [raw]})
    assert info.value.code == "invalid_argument" and info.value.field == field


def test_alerts_setup_limits_and_unique_ids(services):
    raw = {"id": "same", "name": "x", "metric_type": "cpu_usage", "threshold": 1, "operator": "gt"}
    with pytest.raises(AgentError):
        call("monitoring.alerts.setup", services, {"rules": [raw, raw]})
    many = [dict(raw, id=str(i)) for i in range(101)]
    with pytest.raises(AgentError):
        call("monitoring.alerts.setup", services, {"rules": many})


def test_evaluator_duration_cooldown_and_resolve():
    evaluator, r = Evaluator(cooldown=100), rule()
    fire = lambda value, now: evaluator.evaluate(r, "c1", "web", value, now)  # noqa: E731
    assert fire(90, 0) == []                       # holds, but not for 10 s yet
    first = fire(90, 10)
    assert len(first) == 1 and first[0]["resolved"] is False and first[0]["rule_id"] == "r1"
    assert fire(95, 50) == []                      # still holding: cooldown
    again = fire(95, 110)
    assert len(again) == 1 and again[0]["id"] != first[0]["id"]
    resolved = fire(10, 120)
    assert resolved[0]["resolved"] is True and resolved[0]["id"] == again[0]["id"]
    assert fire(10, 130) == [] and evaluator.active() == 0


def test_evaluator_never_matches_unmeasurable_values():
    evaluator = Evaluator()
    assert evaluator.evaluate(rule(metric_type="memory_limit", duration_seconds=0), "c", "n", None, 0) == []


def test_metric_values_deltas_and_limits():
    def sample(errors, restarts, state="running", health="none"):
        return {"cpu": {"usage": 12.5}, "memory": {"usage": 50, "percent": 5.0},
                "network": {"rx_errors": errors, "tx_errors": 1}, "restart_count": restarts,
                "state": state, "health": health,
                "response_time": {"status_code": 200, "response_time": 2_500_000}}

    first = metric_values(sample(3, 1), None, 0, 42.0)
    assert first["network_errors"] == 0 and first["container_restart"] == 0 and first["memory_limit"] is None
    later = metric_values(sample(7, 3, state="exited", health="unhealthy"), sample(3, 1), 200, 42.0)
    assert later["network_errors"] == 4 and later["container_restart"] == 2
    assert later["memory_limit"] == 25.0 and later["disk_usage"] == 42.0 and later["response_time"] == 2.5
    assert later["container_down"] == 1 and later["health_check"] == 1 and later["cpu_usage"] == 12.5


# -- the service --------------------------------------------------------------------

STATS = {"cpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000}, "system_cpu_usage": 4_000_000_000, "online_cpus": 2},
         "precpu_stats": {"cpu_usage": {"total_usage": 1_000_000_000}, "system_cpu_usage": 3_000_000_000},
         "memory_stats": {"usage": 100, "limit": 1000, "stats": {"anon": 80, "file": 20, "inactive_file": 0}}}


@pytest.fixture
def monitor(services):
    monitor = MonitoringService(services, interval=0.02, cooldown=1000)
    services.__dict__["monitoring"] = monitor
    yield monitor
    monitor.stop()


def test_collect_once_samples_managed_containers_and_fires_once_per_cooldown(monitor, services, fake_client):
    web = app(fake_client, "web", 1)
    app(fake_client, "web", 0, state="exited")
    fake_client.containers.add("plain", labels={})
    fake_client.api.stats_result = STATS             # 200 % CPU
    monitor.setup_rules([rule(duration_seconds=0, threshold=150)])
    monitor.collect_once(now=1000)
    monitor.collect_once(now=1010)
    metrics = call("monitoring.container.metrics", services)
    assert set(metrics) == {c.id for c in fake_client.containers.items.values() if c.labels}
    assert metrics[web.id]["cpu"]["usage"] == 200.0 and metrics[web.id]["memory"]["rss"] == 80
    alerts = services.events.named("monitoring_alert")
    assert [a["container_id"] for a in alerts] == [web.id]
    fake_client.api.stats_result = dict(STATS, cpu_stats=STATS["precpu_stats"])   # 0 %
    monitor.collect_once(now=1020)
    assert services.events.named("monitoring_alert")[-1]["resolved"] is True
    status = call("monitoring.status", services)
    assert status["total_alerts"] == 2 and status["active_alerts"] == 0 and status["active_containers"] == 1
    assert status["last_metrics_collection"].endswith("Z")


def test_container_down_alert_also_emits_container_stopped_but_not_for_the_proxy(monitor, services, fake_client):
    down = app(fake_client, "web", 1, state="exited")
    fake_client.containers.add("pulseup-caddy", state="exited", labels={
        "pulseup.managed": "true", "pulseup.component": "caddy"})
    monitor.setup_rules([r for r in default_rules() if r["id"] == "container-down"])
    monitor.collect_once(now=5)
    assert [a["container_id"] for a in services.events.named("monitoring_alert")] == [down.id]
    stopped = services.events.named("container_stopped")
    assert stopped[0]["container_id"] == down.id and stopped[0]["severity"] == "critical"
    assert stopped[0]["alert_id"] == services.events.named("monitoring_alert")[0]["id"]


def test_websocket_event_false_keeps_alerts_local(monitor, services, fake_client):
    app(fake_client, "web", 1, state="exited")
    quiet = rule(metric_type="container_down", operator="eq", threshold=1, duration_seconds=0,
                 notification_config={"websocket_event": False, "log_event": True})
    monitor.setup_rules([quiet])
    monitor.collect_once(now=1)
    assert services.events.named("monitoring_alert") == [] and monitor.status()["total_alerts"] == 1


def test_rules_and_cooldowns_survive_a_restart(monitor, services, fake_client, cfg):
    web = app(fake_client, "web", 1, state="exited")
    monitor.setup_rules([rule(metric_type="container_down", operator="eq", threshold=1, duration_seconds=0)])
    monitor.collect_once(now=100)
    path = os.path.join(cfg.state_dir, "monitoring.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cfg.state_dir).st_mode) == 0o700
    saved = json.load(open(path))
    assert saved["rules"][0]["last_triggered"] and f"r1|{web.id}" in saved["cooldowns"]
    again = MonitoringService(services, cooldown=1000)
    assert [r["id"] for r in again.rules] == ["r1"]
    again.collect_once(now=200)                    # still inside the cooldown: no second alert
    assert len(services.events.named("monitoring_alert")) == 1
    again.collect_once(now=1200)
    assert len(services.events.named("monitoring_alert")) == 2


def test_start_stop_are_idempotent_and_install_defaults(monitor, services, fake_client):
    assert call("monitoring.start", services) == {"message": "monitoring started successfully", "changed": True}
    assert call("monitoring.start", services)["changed"] is False
    assert sorted(r["id"] for r in monitor.rules) == ["container-down", "cpu-high", "memory-high"]
    gevent.sleep(0.1)
    status = call("monitoring.status", services)
    assert status["enabled"] is True and status["uptime"] > 0 and status["uptime_seconds"] > 0
    assert status["connection"] is None and status["outbox_queued"] is None
    assert call("monitoring.stop", services) == {"message": "monitoring stopped successfully", "changed": True}
    assert call("monitoring.stop", services) == {"message": "monitoring not running", "changed": False}
    assert call("monitoring.status", services)["enabled"] is False


def test_status_reports_connection_figures(monitor, services):
    services.status = lambda: {"connection": {"state": "connected", "since": "t", "reconnects": 2},
                               "outbox_queued": 3, "outbox_dropped": 1, "other": 9}
    status = monitor.status()
    assert status["connection"]["reconnects"] == 2 and status["outbox_queued"] == 3 and status["outbox_dropped"] == 1
    assert "other" not in status


def test_alert_listener_may_query_the_service_without_deadlock(monitor, services, fake_client):
    app(fake_client, "web", 1, state="exited")
    seen = []

    class Listener:
        def emit(self, event, data):
            seen.append((event, monitor.status()["active_alerts"], monitor.container_metrics()))

    services.events = Listener()
    monitor.setup_rules([rule(metric_type="container_down", operator="eq", threshold=1, duration_seconds=0)])
    monitor.start()
    with gevent.Timeout(5):
        while not seen:
            gevent.sleep(0.01)
    assert seen[0][0] == "monitoring_alert" and seen[0][1] == 1


def test_a_failing_engine_counts_errors_and_the_loop_goes_on(monitor, services, fake_client):
    import requests

    def broken(**kwargs):
        raise requests.exceptions.ConnectionError("down")

    fake_client.containers.list = broken
    monitor.setup_rules([])
    monitor.rules = []
    monitor.start()
    with gevent.Timeout(5):
        while monitor.status()["metrics_errors"] < 2:
            gevent.sleep(0.01)
    assert monitor.running


def test_unreadable_state_file_is_ignored(services, cfg):
    os.makedirs(cfg.state_dir, exist_ok=True)
    with open(os.path.join(cfg.state_dir, "monitoring.json"), "w") as f:
        f.write("{not json")
    assert MonitoringService(services).rules == []
