"""Stats of a busy container and the event watcher on the test dockerd."""
import pytest
from ctsupport import IDLE, wait_until

from agent.errors import AgentError
from agent.services.docker import events as docker_events

pytestmark = pytest.mark.integration

BUSY = "trap 'exit 0' TERM; while true; do :; done"


def test_stats_of_a_busy_container(run, make_app, make_container, uid):
    busy = make_app(uid, 1, script=BUSY, mem_limit="64m")
    sample = run("service.container.stats.live", {"service_uid": uid})
    assert sample["container_id"] == busy.id and sample["container_name"] == busy.name
    assert sample["status"] == "running" and sample["pulseup_managed"] is True
    assert sample["cpu"]["usage"] > 20.0            # a shell spinning on one core
    assert sample["cpu"]["limit"] >= 1.0
    assert sample["memory"]["limit"] == 64 * 1024 * 1024
    assert 0 < sample["memory"]["usage"] < sample["memory"]["limit"]
    assert 0 < sample["memory"]["percent"] < 100
    assert sample["network"]["rx_bytes"] >= 0 and set(sample["disk"]) == {"read_bytes", "write_bytes", "read_ops", "write_ops"}
    assert sample["uptime"] > 0 and sample["uptime_seconds"] == pytest.approx(sample["uptime"] / 1e9)
    by_id = run("service.container.stats.live", {"container_id": busy.id[:12]})
    assert by_id["container_id"] == busy.id
    stranger = make_container(f"stranger-{uid}", {}, IDLE)
    with pytest.raises(AgentError) as info:
        run("service.container.stats.live", {"container_id": stranger.name})
    assert info.value.code == "permission_denied"


@pytest.fixture
def watcher(services):
    watcher = docker_events.start(services, backoff_start=0.1, backoff_max=0.5)
    wait_until(lambda: watcher.connected, what="the events stream")
    yield watcher
    watcher.stop()


def test_docker_kill_reports_container_stopped_and_service_stopped(services, watcher, make_app, uid, docker_client):
    container = make_app(uid, 1)
    wait_until(lambda: any(e["service_uid"] == uid and e["status"] == "running"
                           for e in services.events.named("update_service_status")), what="running")
    docker_client.api.kill(container.id)
    stopped = wait_until(lambda: [e for e in services.events.named("container_stopped") if e["container_id"] == container.id],
                         what="container_stopped")
    assert stopped[0]["exit_code"] == "137" and stopped[0]["expected"] is False
    assert stopped[0]["service_uid"] == uid and stopped[0]["container_name"] == container.name
    status = wait_until(lambda: [e for e in services.events.named("update_service_status")
                                 if e["service_uid"] == uid and e["status"] == "stopped"], what="stopped")
    assert status[0]["error"] == "container exited with code 137"
    wait_until(lambda: container.reload() or container.status == "exited", what="exit")
    assert len([e for e in services.events.named("container_stopped") if e["container_id"] == container.id]) == 1


def test_a_swap_reports_running_not_stopped(services, watcher, make_app, uid, docker_client):
    old = make_app(uid, 1)
    new = make_app(uid, 2, candidate=True)
    new.rename(f"pulseup-app-{uid}-v0002")
    old.stop(timeout=5)
    wait_until(lambda: [e for e in services.events.named("container_stopped") if e["container_id"] == old.id],
               what="the old container's stop")
    reported = [e["status"] for e in services.events.named("update_service_status") if e["service_uid"] == uid]
    assert reported == ["running"]


def test_service_stop_is_expected(run, services, watcher, make_app, uid):
    container = make_app(uid, 1)
    run("service.stop", {"service_uid": uid})
    stopped = wait_until(lambda: [e for e in services.events.named("container_stopped") if e["container_id"] == container.id],
                         what="container_stopped")
    assert stopped[0]["expected"] is True
    reported = [e["status"] for e in services.events.named("update_service_status") if e["service_uid"] == uid]
    assert reported[-2:] == ["stopping", "stopped"] and reported.count("stopped") == 1
