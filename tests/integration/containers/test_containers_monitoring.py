"""Monitoring on the test dockerd: real samples, HTTP probes on pulseup-net, an alert that
fires once per cooldown while its condition holds, resolves, and whose rule survives a
restart of the monitoring service (reloaded from STATE_DIR)."""
import io
import tarfile
import time

import pytest
from ctsupport import IDLE, wait_until

from agent.services.monitoring import MonitoringService

pytestmark = pytest.mark.integration

COOLDOWN = 2.0


@pytest.fixture(scope="module")
def web_image(docker_client, app_base_image):
    """The busybox httpd app image with its port exposed (the probe needs a known port)."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        dockerfile = f"FROM {app_base_image}\nEXPOSE 8080\n".encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    data.seek(0)
    image, _ = docker_client.images.build(fileobj=data, custom_context=True, tag="pulseup-test/web:exposed", pull=False)
    return image.tags[0]


def _alerts(services, container):
    return [a for a in services.events.named("monitoring_alert") if a["container_id"] == container.id]


def _monitor(services):
    monitor = MonitoringService(services, interval=0.2, cooldown=COOLDOWN)
    services.__dict__["monitoring"] = monitor     # what the handlers reach
    return monitor


def test_alert_fires_per_cooldown_resolves_and_survives_a_restart(run, services, make_app, web_image, uid):
    web = make_app(uid, 1, script=None, image=web_image)
    down = make_app(f"{uid}d", 1, script=IDLE)
    down.stop(timeout=5)
    _monitor(services)
    rule = {"id": "down", "name": "Container down", "metric_type": "container_down", "threshold": 1,
            "operator": "eq", "duration_seconds": 0, "severity": "critical", "container_filter": f"^pulseup-app-{uid}"}
    assert run("monitoring.alerts.setup", {"rules": [rule]}) == {"message": "alerts configured successfully", "rule_count": 1}
    assert run("monitoring.start")["changed"] is True

    first = wait_until(lambda: _alerts(services, down), what="the first alert")[0]
    assert first["rule_id"] == "down" and first["resolved"] is False and first["severity"] == "critical"
    fired_at = time.monotonic()
    metrics = wait_until(lambda: (run("monitoring.container.metrics").get(web.id) or {}).get("response_time"),
                         what="a probe of the web container")
    assert metrics["url"].endswith(":8080/") and metrics["status_code"] in (200, 404) and metrics["success"] is True
    assert run("monitoring.container.metrics")[web.id]["cpu"]["limit"] >= 1
    assert _alerts(services, web) == []
    second = wait_until(lambda: _alerts(services, down)[1:], timeout=10 * COOLDOWN, what="the second alert")[0]
    assert time.monotonic() - fired_at >= COOLDOWN * 0.9    # not before its cooldown
    assert second["id"] != first["id"] and len(_alerts(services, down)) == 2
    stopped = [e for e in services.events.named("container_stopped") if e.get("alert_id") == first["id"]]
    assert stopped and stopped[0]["container_id"] == down.id
    status = run("monitoring.status")
    assert status["enabled"] is True and status["active_alerts"] == 1 and status["total_alerts"] >= 2

    # restart of the monitoring service: the rule and its cooldown come back from STATE_DIR
    assert run("monitoring.stop")["changed"] is True
    second_at = time.monotonic()
    restarted = _monitor(services)
    assert [r["id"] for r in restarted.rules] == ["down"]
    assert run("monitoring.start")["changed"] is True
    third = wait_until(lambda: _alerts(services, down)[2:], timeout=10 * COOLDOWN, what="an alert after the restart")[0]
    assert time.monotonic() - second_at >= COOLDOWN * 0.9
    assert third["rule_id"] == "down"

    down.start()
    resolved = wait_until(lambda: [a for a in _alerts(services, down) if a["resolved"]], what="the resolution")
    assert resolved[0]["id"] == third["id"]
    run("monitoring.stop")
