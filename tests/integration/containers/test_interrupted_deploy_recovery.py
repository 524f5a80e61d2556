"""Restart recovery of an interrupted swap decides by the recorded phase (docs/operations.md
"Restart recovery", agent/services/deploy/recovery.py): before switch_traffic the candidate
goes and the previous version serves (started again if a single-slot swap had stopped it);
from switch_traffic on a running candidate is finished (renamed, previous removed), a dead
one is given up for the previous version. Exactly one app container is left each time."""

import docker.errors
import pytest

from agent.services.deploy import DeployService


def _record(uid, phase, previous=None, candidate=None, version=2, kind="deploy"):
    return {"kind": kind, "operation_id": f"{kind}:d-{uid}", "service_uid": uid, "deployment_uid": f"d-{uid}",
            "phase": phase, "version": version, "candidate": f"pulseup-app-{uid}-v{version:04d}-candidate",
            "final": f"pulseup-app-{uid}-v{version:04d}", "port": None,
            "previous": previous.name if previous else None, "previous_id": previous.id if previous else None,
            "candidate_id": candidate.id if candidate else None}


def _names(docker_client, uid):
    found = docker_client.containers.list(all=True, filters={"label": f"pulseup.service_uid={uid}"})
    return sorted(c.name for c in found)


def _outcome(result):
    """(status, serving container, phase) of a recovered swap, from its Result's details."""
    return result.details["recovery"], result.details["serving_container"], result.details["phase"]


def _gone(docker_client, container):
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(container.id)


def test_no_record_candidate_removed_and_stopped_previous_restarted(services, make_app, docker_client, uid):
    previous = make_app(uid, 1)
    previous.stop(timeout=1)                  # single-slot: the old version was stopped first
    candidate = make_app(uid, 2, candidate=True)
    result = DeployService(services).recover({"kind": "deploy", "operation_id": "deploy:x", "service_uid": uid,
                                               "deployment_uid": "x", "phase": None})
    assert _outcome(result)[:2] == ("failed", previous.name)
    _gone(docker_client, candidate)
    previous.reload()
    assert previous.status == "running"
    assert _names(docker_client, uid) == [previous.name]


@pytest.mark.parametrize("phase", ["deploy_container", "stop_previous", "health_check"])
def test_before_the_switch_the_previous_version_serves(services, make_app, docker_client, uid, phase):
    previous = make_app(uid, 1)
    if phase != "deploy_container":
        previous.stop(timeout=1)
    candidate = make_app(uid, 2, candidate=True)
    result = DeployService(services).recover(_record(uid, phase, previous, candidate))
    assert _outcome(result) == ("failed", previous.name, phase)
    _gone(docker_client, candidate)
    previous.reload()
    assert previous.status == "running"
    assert _names(docker_client, uid) == [previous.name]
    assert f"{previous.name} serves" in result.message


@pytest.mark.parametrize("phase, renamed", [("switch_traffic", False), ("switch_traffic", True),
                                            ("cleanup", True), ("done", True)])
def test_past_the_switch_a_running_candidate_is_finished(services, make_app, docker_client, uid, phase, renamed):
    previous = make_app(uid, 1)
    candidate = make_app(uid, 2, candidate=not renamed)
    deploy = DeployService(services)
    record = dict(_record(uid, phase, previous, candidate), history={"image_name": "img:2", "commit_sha": "ab"})
    result = deploy.recover(record)
    final = f"pulseup-app-{uid}-v0002"
    assert _outcome(result)[:2] == ("completed", final)
    _gone(docker_client, previous)
    candidate.reload()
    assert (candidate.name, candidate.status) == (final, "running")
    assert _names(docker_client, uid) == [final]
    assert deploy.history.load(uid)[0]["image_name"] == "img:2"


def test_past_the_switch_a_dead_candidate_switches_back(services, make_app, docker_client, uid):
    previous = make_app(uid, 1)
    previous.stop(timeout=1)
    candidate = make_app(uid, 2, script="exit 3")
    candidate.wait(timeout=30)
    result = DeployService(services).recover(_record(uid, "switch_traffic", previous, candidate, kind="rollback"))
    assert _outcome(result)[:2] == ("failed", previous.name)
    _gone(docker_client, candidate)
    previous.reload()
    assert previous.status == "running"
    assert _names(docker_client, uid) == [previous.name]
