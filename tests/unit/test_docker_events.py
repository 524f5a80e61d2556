import time

import gevent
import pytest
import requests

from agent.services.docker.events import EventsWatcher, start
from tests.unit.test_docker_fakes import (  # noqa: F401 (fixtures)
    app, cfg, database, docker_service, fake_client, services)


def event(container, action, at=1700000000.5, **attrs):
    attributes = dict(container.labels, name=container.name, **attrs)
    return {"Type": "container", "Action": action, "status": action, "time": int(at),
            "timeNano": int(at * 1e9), "Actor": {"ID": container.id, "Attributes": attributes}}


@pytest.fixture
def watcher(services):
    return EventsWatcher(services)


def test_kill_of_the_active_container_reports_stopped_once(watcher, services, fake_client):
    web = app(fake_client, "web", 1)
    web.set_state("exited")
    for action, attrs in (("kill", {"signal": "9"}), ("die", {"exitCode": "137"}), ("stop", {})):
        watcher.handle(event(web, action, **attrs))
    stopped = services.events.named("container_stopped")
    assert len(stopped) == 1
    assert stopped[0]["container_id"] == web.id and stopped[0]["action"] == "die"
    assert stopped[0]["exit_code"] == "137" and stopped[0]["expected"] is False
    assert stopped[0]["service_uid"] == "web" and stopped[0]["deployment_uid"] == "dep1"
    assert stopped[0]["timestamp"].startswith("2023-11-14T22:13:20.5")
    status = services.events.named("update_service_status")
    assert [(s["status"], s.get("error")) for s in status] == [("stopped", "container exited with code 137")]


def test_start_after_stop_reports_running_and_a_new_stop_again(watcher, services, fake_client):
    web = app(fake_client, "web", 1)
    watcher.handle(event(web, "start"))
    web.set_state("exited")
    watcher.handle(event(web, "die", exitCode="0"))
    web.set_state("running")
    watcher.handle(event(web, "start"))
    watcher.handle(event(web, "start"))          # repeated: suppressed
    web.set_state("exited")
    watcher.handle(event(web, "die", exitCode="0"))
    assert [s["status"] for s in services.events.named("update_service_status")] == [
        "running", "stopped", "running", "stopped"]
    assert len(services.events.named("container_stopped")) == 2
    assert "error" not in services.events.named("update_service_status")[1]


def test_swap_reports_running_not_stopped(watcher, services, fake_client):
    old = app(fake_client, "web", 1)
    watcher.handle(event(old, "start"))
    new = app(fake_client, "web", 2, candidate=True)
    watcher.handle(event(new, "start"))          # a candidate is not the active container
    new.attrs["Name"] = "/pulseup-app-web-v0002"  # renamed to its final name, then the old one stops
    watcher.handle(event(new, "rename"))
    old.set_state("exited")
    watcher.handle(event(old, "die", exitCode="143"))
    assert [s["status"] for s in services.events.named("update_service_status")] == ["running"]
    # container_stopped is still reported, for the record
    assert [c["container_name"] for c in services.events.named("container_stopped")] == [old.name]


def test_expected_stops_do_not_change_service_status(watcher, services, docker_service, fake_client):
    web = app(fake_client, "web", 1)
    docker_service.mark_expected(web.id)
    web.set_state("exited")
    watcher.handle(event(web, "die", exitCode="0"))
    assert services.events.named("update_service_status") == []
    assert services.events.named("container_stopped")[0]["expected"] is True
    web.set_state("running")
    watcher.handle(event(web, "start"))           # a late event of the earlier run: still expected
    assert docker_service.is_expected(web.id)
    watcher.handle(event(web, "start", at=time.time() + 1))   # the next run is not expected any more
    assert not docker_service.is_expected(web.id)


def test_unhealthy_reports_failed_and_healthy_running(watcher, services, fake_client):
    web = app(fake_client, "web", 1, health="unhealthy")
    watcher.handle(event(web, "health_status: unhealthy"))
    web.attrs["State"]["Health"]["Status"] = "healthy"
    watcher.handle(event(web, "health_status: healthy"))
    assert [s["status"] for s in services.events.named("update_service_status")] == ["failed", "running"]
    assert services.events.named("container_stopped")[0]["action"] == "health_status: unhealthy"


def test_database_container_and_proxy(watcher, services, fake_client):
    db = database(fake_client, "pg")
    db.set_state("exited")
    watcher.handle(event(db, "die", exitCode="1"))
    proxy = fake_client.containers.add("pulseup-caddy", labels={
        "pulseup.managed": "true", "pulseup.service_uid": "svc_pulseup_caddy", "pulseup.component": "caddy",
        "pulseup.lifecycle.version": "1"})
    proxy.set_state("exited")
    watcher.handle(event(proxy, "die", exitCode="1"))
    assert [(s["service_uid"], s["status"]) for s in services.events.named("update_service_status")] == [("pg", "stopped")]
    assert len(services.events.named("container_stopped")) == 2


def test_unmanaged_and_non_container_events_are_ignored(watcher, services, fake_client):
    plain = fake_client.containers.add("plain", labels={})
    watcher.handle(event(plain, "die", exitCode="1"))
    watcher.handle({"Type": "network", "Action": "connect", "Actor": {"ID": "n", "Attributes": {}}})
    assert services.events.events == []


def test_stale_version_stopping_is_not_the_service_status(watcher, services, fake_client):
    app(fake_client, "web", 2)
    stale = app(fake_client, "web", 1)
    stale.set_state("exited")
    watcher.handle(event(stale, "die", exitCode="0"))
    assert services.events.named("update_service_status") == []


class FakeEventStream:
    def __init__(self, items, error=None):
        self.items, self.error, self.closed = list(items), error, False

    def __iter__(self):
        for item in self.items:
            yield item
        if self.error:
            raise self.error
        gevent.sleep(30)

    def close(self):
        self.closed = True


def test_reconnects_with_backoff_and_resumes_from_the_last_event(services, fake_client):
    web = app(fake_client, "web", 1)
    web.set_state("exited")
    calls = []

    def events(since=None, filters=None, decode=None):
        calls.append((since, filters))
        if len(calls) == 1:
            return FakeEventStream([event(web, "die", exitCode="2")], requests.exceptions.ConnectionError("reset"))
        if len(calls) == 2:
            raise requests.exceptions.ConnectionError("refused")
        return FakeEventStream([])

    fake_client.api.events = events
    watcher = start(services, backoff_start=0.01, backoff_max=0.02)
    with gevent.Timeout(5):
        while len(calls) < 3:
            gevent.sleep(0.01)
    watcher.stop()
    assert calls[0][1] == {"type": "container", "label": ["pulseup.managed=true"]}
    assert calls[1][0] == 1700000000 and calls[2][0] == 1700000000
    assert len(services.events.named("container_stopped")) == 1
