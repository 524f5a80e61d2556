"""A worker killed mid-swap: the restarted worker removes the candidate and brings the previous
version back when a single-slot swap had stopped it (agent/services/deploy recover_interrupted)."""

import docker.errors
import pytest

from agent.services.deploy import DeployService


def test_candidate_removed_and_stopped_previous_restarted(services, make_app, docker_client, uid):
    previous = make_app(uid, 1)
    previous.stop(timeout=1)                  # single-slot: the old version was stopped first
    candidate = make_app(uid, 2, candidate=True)
    acted = DeployService(services).recover_interrupted(uid)
    assert acted == [candidate.name, previous.name]
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(candidate.name)
    previous.reload()
    assert previous.status == "running"


def test_running_previous_is_left_alone(services, make_app, uid):
    previous = make_app(uid, 1)
    candidate = make_app(uid, 2, candidate=True)
    assert DeployService(services).recover_interrupted(uid) == [candidate.name]
    previous.reload()
    assert previous.status == "running"
