"""Provisioning refusals that happen before any container exists (docs/commands.md, "Databases")."""
import socket

import pytest
from helpers import PASSWORD

from agent.errors import AgentError
from agent.services.database.provision import DeployRequest


def _error(recorder, request):
    with pytest.raises(AgentError) as err:
        recorder.services.database.deploy(recorder.ctx(), request)
    return err.value


def test_port_published_by_a_container_is_a_conflict(recorder, docker_client, base_image, test_network, uid_factory):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    holder = docker_client.containers.run(base_image, ["sleep", "300"], detach=True, name=f"holder-{port}",
                                          network=test_network, ports={"80/tcp": ("127.0.0.1", port)})
    try:
        err = _error(recorder, DeployRequest(uid_factory("p"), "redis", PASSWORD, port=port))
        assert err.code == "conflict" and err.message == f"port {port} is already in use by container 'holder-{port}'"
    finally:
        holder.remove(force=True)


def test_port_held_by_a_host_process_is_a_conflict(recorder, uid_factory, docker_client):
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen(1)
        port = held.getsockname()[1]
        uid = uid_factory("p")
        err = _error(recorder, DeployRequest(uid, "redis", PASSWORD, port=port))
        assert err.code == "conflict" and err.message == f"port {port} is in use on the host"
    assert not docker_client.containers.list(all=True, filters={"name": f"pulseup-db-{uid}"})
    failed = recorder.of("update_service_status")[-1]
    assert failed["status"] == "failed" and "in use" in failed["error"]


def test_missing_image_is_not_pulled_with_pull_never(recorder, uid_factory):
    from agent.services.database import DatabaseService
    cfg = recorder.services.cfg.replace(db_image_redis="pulseup-test/absent:1")
    service = DatabaseService(cfg)
    try:
        with pytest.raises(AgentError) as err:
            service.deploy(recorder.ctx(), DeployRequest(uid_factory("p"), "redis", PASSWORD))
    finally:
        service.close()
    assert err.value.code == "failed_precondition" and "pulseup-test/absent:1" in err.value.message


def test_automatic_port_skips_taken_ones(recorder, uid_factory):
    with socket.socket() as held:
        try:
            held.bind(("127.0.0.1", 6379))
            held.listen(1)
        except OSError:
            pass  # someone else holds it already: taken either way
        reply = recorder.services.database.deploy(recorder.ctx(), DeployRequest(uid_factory("p"), "redis", PASSWORD))
    assert reply["port"] > 6379
