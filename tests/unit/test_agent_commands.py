import os

import gevent
import pytest

from agent import log, proc
from agent.errors import AgentError
from agent.handlers import agent_commands
from agent.services.context import CallContext
from agent.handlers.registry import Registry
from agent.protocol.fields import load_request
from agent.services import commands
from tests.unit.test_docker_fakes import (  # noqa: F401 (fixtures)
    cfg, docker_service, fake_client, services)

VALID_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


class FakeIPC:
    def __init__(self, result=None, error=None):
        self.calls, self.result, self.error = [], result, error

    def call(self, op, args=None, timeout=30.0):
        self.calls.append((op, args, timeout))
        if self.error:
            raise self.error
        return self.result if self.result is not None else {}


def call(name, services, data=None, ctx=None):
    registry = Registry()
    agent_commands.register(registry)
    command = registry.get(name)
    ctx = ctx or CallContext(services, name)
    return command.func(ctx, load_request(command.schema, data or {}))


# -- the whitelist ------------------------------------------------------------------

def test_list_is_the_whitelist_sorted_by_id(services):
    reply = call("agent.command.list", services)
    ids = [c["id"] for c in reply["commands"]]
    assert ids == sorted(ids) and reply["total_commands"] == 13 == len(ids)
    assert set(ids) >= {"system.reboot", "docker.list_all", "agent.restart", "service.restart_caddy"}
    assert {c["id"] for c in reply["commands_by_category"]["disk"]} == {"disk.cleanup_logs", "disk.cleanup_temp"}
    reboot = next(c for c in reply["commands"] if c["id"] == "system.reboot")
    assert reboot["requires_confirmation"] is True and reboot["category"] == "system"
    assert "category" not in reply["commands_by_category"]["system"][0]


def test_unknown_command_is_not_found(services):
    with pytest.raises(AgentError) as info:
        call("agent.command.execute", services, {"command_id": "rm.everything"})
    assert info.value.code == "not_found"


def test_confirmation_is_required_and_nothing_runs(services):
    services.ipc = FakeIPC()
    with pytest.raises(AgentError) as info:
        call("agent.command.execute", services, {"command_id": "system.reboot"})
    assert info.value.code == "failed_precondition" and services.ipc.calls == []


def test_disabled_commands_are_refused(services, cfg):
    services.cfg = cfg.replace(pulseup_disabled_commands=("system.reboot",))
    services.ipc = FakeIPC()
    with pytest.raises(AgentError) as info:
        call("agent.command.execute", services, {"command_id": "system.reboot", "confirm": True})
    assert info.value.code == "permission_denied" and services.ipc.calls == []


@pytest.mark.parametrize("command_id,op,args", [
    ("system.reboot", "system.reboot", {}),
    ("system.update_packages", "system.update_packages", {}),
    ("service.restart_docker", "service.restart", {"unit": "docker"}),
    ("disk.cleanup_temp", "disk.cleanup_temp", {}),
])
def test_privileged_commands_go_through_the_supervisor(services, command_id, op, args):
    services.ipc = FakeIPC({"output": "done"})
    reply = call("agent.command.execute", services, {"command_id": command_id, "confirm": True, "args": {"x": 1}})
    assert services.ipc.calls[0][:2] == (op, args)
    assert reply["output"] == "done" and reply["exit_code"] == 0 and reply["error"] == ""
    assert reply["timestamp"].endswith("Z") and reply["duration_seconds"] >= 0


def test_update_packages_gets_a_longer_supervisor_timeout(services):
    services.ipc = FakeIPC({})
    call("agent.command.execute", services, {"command_id": "system.update_packages", "confirm": True})
    call("agent.command.execute", services, {"command_id": "disk.cleanup_logs"})
    assert [c[2] for c in services.ipc.calls] == [1800.0, 300.0]


def test_no_supervisor_is_unavailable(services):
    with pytest.raises(AgentError) as info:
        call("agent.command.execute", services, {"command_id": "disk.cleanup_logs"})
    assert info.value.code == "unavailable" and info.value.message == "supervisor is not reachable"


def test_supervisor_non_zero_exit_is_command_failed(services):
    services.ipc = FakeIPC({"output": "partial", "error": "E: lock held\n", "exit_code": 100})
    with pytest.raises(AgentError) as info:
        call("agent.command.execute", services, {"command_id": "system.update_packages", "confirm": True})
    assert info.value.code == "command_failed" and info.value.message == "Command failed: E: lock held"
    assert info.value.details["exit_code"] == 100 and info.value.details["output"] == "partial"


def test_agent_update_is_always_refused(services):
    with pytest.raises(AgentError) as info:
        call("agent.command.execute", services, {"command_id": "agent.update", "confirm": True})
    assert info.value.code == "failed_precondition" and "agent.update.apply" in info.value.message


def test_agent_restart_replies_first_then_asks_the_supervisor(services, monkeypatch):
    monkeypatch.setattr(commands, "RESTART_DELAY", 0.05)
    services.ipc = FakeIPC()
    reply = call("agent.command.execute", services, {"command_id": "agent.restart"})
    assert reply["exit_code"] == 0 and services.ipc.calls == []
    with gevent.Timeout(5):
        while not services.ipc.calls:
            gevent.sleep(0.01)
    assert services.ipc.calls[0][:2] == ("service.restart", {"unit": "pulseup-worker"})


def test_restart_caddy_restarts_the_labelled_proxy(services, fake_client):
    with pytest.raises(AgentError) as info:
        call("agent.command.execute", services, {"command_id": "service.restart_caddy"})
    assert info.value.code == "not_found"
    fake_client.containers.add("caddy", labels={})          # an unrelated container named caddy
    proxy = fake_client.containers.add("pulseup-caddy", labels={"pulseup.managed": "true", "pulseup.component": "caddy"})
    reply = call("agent.command.execute", services, {"command_id": "service.restart_caddy"})
    assert proxy.calls == ["restart"] and "pulseup-caddy" in reply["output"]


def test_prunes_never_touch_database_volumes(services, fake_client):
    seen = {}
    fake_client.images.prune = lambda filters: seen.setdefault("images", filters) and {
        "ImagesDeleted": [{"Untagged": "a:1"}], "SpaceReclaimed": 5}
    fake_client.volumes.prune = lambda filters: seen.setdefault("volumes", filters) and {
        "VolumesDeleted": ["v1"], "SpaceReclaimed": 7}
    fake_client.containers.prune = lambda filters: seen.setdefault("containers", filters) and {}
    fake_client.networks.prune = lambda: {"NetworksDeleted": None}
    fake_client.api.prune_builds = lambda: {"CachesDeleted": None, "SpaceReclaimed": 0}
    reply = call("agent.command.execute", services, {"command_id": "docker.system_prune", "confirm": True})
    assert seen["volumes"] == {"label!": "pulseup.component=database"}
    assert seen["images"] == {"dangling": False}
    assert seen["containers"] == {"label!": "pulseup.managed=true"}
    assert "volumes: removed 1, reclaimed 7 bytes" in reply["output"]
    fake_client.api.api_version = "1.43"
    seen.clear()
    call("agent.command.execute", services, {"command_id": "docker.prune_volumes", "confirm": True})
    assert seen["volumes"] == {"label!": "pulseup.component=database", "all": "true"}


def test_execute_operation_spec():
    registry = Registry()
    agent_commands.register(registry)
    spec = registry.get("agent.command.execute").operation
    request = {"command_id": "docker.list_all"}
    assert spec.operation_id(request) == "command:docker.list_all" == spec.lock_key(request)
    assert (spec.default_timeout(request), spec.timeout_max) == (300, 3600)
    assert spec.default_timeout({"command_id": "system.update_packages"}) == 1800


def test_docker_list_all_runs_the_cli_without_a_shell(services, monkeypatch, tmp_path):
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho \"$@\"\necho DOCKER_HOST=$DOCKER_HOST\n")
    fake.chmod(0o755)
    monkeypatch.setattr(proc, "CHILD_PATH", f"{tmp_path}:/usr/bin:/bin")
    services.cfg = services.cfg.replace(docker_host="unix:///tmp/d.sock")
    reply = call("agent.command.execute", services, {"command_id": "docker.list_all"})
    assert reply["output"].startswith("ps --all --no-trunc --format table {{.ID}}")
    assert "DOCKER_HOST=unix:///tmp/d.sock" in reply["output"]


# -- agent.logs.fetch ----------------------------------------------------------------

class Ring:
    def __init__(self, lines):
        self.lines = list(lines)

    def tail(self, count):
        return self.lines[-count:]


def stamp(second, text):
    return f'{{"time": "2024-01-01T00:00:{second:02d}.000Z", "msg": "{text}"}}'


def test_agent_logs_merge_ring_and_files_in_time_order(cfg):
    os.makedirs(cfg.agent_log_dir)
    ring = Ring([stamp(3, "w3"), stamp(5, "w5")])
    with open(os.path.join(cfg.agent_log_dir, "worker.log"), "w") as f:
        f.write("\n".join([stamp(1, "w1"), stamp(3, "w3"), stamp(5, "w5")]) + "\n")
    with open(os.path.join(cfg.agent_log_dir, "supervisor.log"), "w") as f:
        f.write("\n".join([stamp(2, "s2"), stamp(4, "s4 password=hunter22"), "  continuation"]) + "\n")
    log.register_secret("hunter22")
    try:
        reply = commands.agent_logs(cfg, 100, ring=ring)
    finally:
        log.forget_secret("hunter22")
    texts = [line.split('"msg": "')[1].split('"')[0] if "msg" in line else line.strip() for line in reply["logs"]]
    assert texts == ["w1", "s2", "w3", "s4 password=***", "continuation", "w5"]
    assert reply["sources"][0] == "ring_buffer" and len(reply["sources"]) == 3
    assert reply["truncated"] is False
    short = commands.agent_logs(cfg, 2, ring=ring)
    assert len(short["logs"]) == 2 and short["truncated"] is True


def test_agent_logs_without_files(cfg, services):
    reply = call("agent.logs.fetch", services, {"lines": 5})
    assert reply["sources"] == ["ring_buffer"]
    with pytest.raises(AgentError):
        call("agent.logs.fetch", services, {"lines": 5001})


def test_tail_file_reads_only_the_end(tmp_path, monkeypatch):
    monkeypatch.setattr(commands, "TAIL_BLOCK", 64)
    path = tmp_path / "big.log"
    path.write_text("".join(f"line {i}\n" for i in range(10000)))
    assert commands.tail_file(str(path), 3) == ["line 9997", "line 9998", "line 9999"]
    assert commands.tail_file(str(tmp_path / "missing.log"), 3) is None


# -- uninstall and ssh keys ----------------------------------------------------------

def test_uninstall_through_the_supervisor(services):
    with pytest.raises(AgentError) as info:
        call("agent.uninstall", services)
    assert info.value.code == "unavailable"
    services.ipc = FakeIPC()
    reply = call("agent.uninstall", services)
    assert reply == {"success": True, "message": "Agent uninstallation requested successfully"}
    assert services.ipc.calls[0][:2] == ("agent.uninstall", {})


def test_ssh_key_add_checks_the_user_then_asks_the_supervisor(services, cfg):
    services.ipc = FakeIPC({"user": "deploy", "fingerprint": "SHA256:abc", "added": True})
    with pytest.raises(AgentError) as info:
        call("server.ssh_key.add", services, {"user": "deploy", "public_key": VALID_KEY})
    assert info.value.code == "permission_denied" and services.ipc.calls == []
    services.cfg = cfg.replace(pulseup_ssh_users=("deploy",))
    reply = call("server.ssh_key.add", services, {"user": "deploy", "public_key": VALID_KEY, "comment": "ci"})
    assert reply == {"user": "deploy", "fingerprint": "SHA256:abc", "added": True}
    assert services.ipc.calls[0][:2] == ("ssh.authorized_keys.add",
                                         {"user": "deploy", "public_key": VALID_KEY, "comment": "ci"})


def test_ssh_key_validation(services):
    for data in ({"user": "deploy", "public_key": 'command="x" ' + VALID_KEY},
                 {"user": "deploy", "public_key": VALID_KEY + "\nssh-rsa AAAA"}):
        with pytest.raises(AgentError) as info:
            call("server.ssh_key.add", services, data)
        assert info.value.field == "public_key"
    with pytest.raises(AgentError) as info:
        call("server.ssh_key.remove", services, {"user": "deploy"})
    assert info.value.code == "invalid_argument"


def test_ssh_key_remove(services, cfg):
    services.cfg = cfg.replace(pulseup_ssh_users=("deploy",))
    services.ipc = FakeIPC({"user": "deploy", "fingerprint": "SHA256:" + "A" * 43, "removed": False})
    reply = call("server.ssh_key.remove", services, {"user": "deploy", "fingerprint": "SHA256:" + "A" * 43})
    assert reply["removed"] is False
    assert services.ipc.calls[0][1] == {"user": "deploy", "fingerprint": "SHA256:" + "A" * 43}
