"""agent.* and server.* through the wire (docs/commands.md, "Agent commands"): the worker answers, and the
privileged ones go over the IPC to the root supervisor, whose host seam records reboots and
package upgrades instead of doing them (tests/e2e/agent_run.py)."""

import os
import re
import shutil
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent import __version__
from tests.e2e.wire import RFC3339

covers = pytest.mark.covers
WHITELIST = ["agent.restart", "agent.update", "disk.cleanup_logs", "disk.cleanup_temp", "docker.list_all",
             "docker.prune_images", "docker.prune_volumes", "docker.system_prune", "service.restart_caddy",
             "service.restart_docker", "system.reboot", "system.shutdown", "system.update_packages"]
CONFIRM = {"system.reboot", "system.shutdown", "system.update_packages", "docker.prune_images",
           "docker.prune_volumes", "docker.system_prune", "service.restart_docker", "agent.update"}


@covers("agent.ping", outcome="success")
def test_ping_echoes_data_absent_data_and_null(wire):
    data = wire.ok("agent.ping", {"probe": [1, "two", None]})
    assert data["echo"] == {"probe": [1, "two", None]} and data["version"] == __version__
    assert isinstance(data["uptime_seconds"], float) and data["uptime_seconds"] > 0
    assert set(data) == {"echo", "version", "uptime_seconds"}
    assert wire.ok("agent.ping")["echo"] == {}


@covers("agent.ping", outcome="refusal")
def test_ping_whose_reply_would_exceed_512_kib_is_invalid_argument(wire):
    wire.refused("agent.ping", {"blob": "x" * (600 * 1024)}, "invalid_argument")


def test_register_hardware_info_after_authentication(wire):
    """docs/commands.md, `register_hardware_info`: the first frame after authentication, flat
    fields plus the HardwareInfo."""
    first = next(frame for _, frame in wire.frames if frame.get("type") == "event")
    assert first["event"] == "register_hardware_info"
    data = first["data"]
    info = wire.ok("agent.hardware.info")
    assert data["hostname"] == data["default_name"] == info["hostname"] and data["ip_address"] == "unknown"
    assert data["private_ip"] == info.get("primary_ip", "unknown") and data["cpu_model"] == info["cpu"]["model"]
    assert data["cpu_arch"] == info["cpu"]["arch"] and data["cpu_cores"] == info["cpu_physical_cores"]
    assert data["cpu_count"] == info["cpu_logical_count"] and data["ram_gb"] == round(info["total_memory_gb"], 2)
    assert data["storage_gb"] == round(info["storage_total_gb"], 2) and data["os_name"] == info["os"]["name"]
    assert data["os_version"] == info["os"]["version"] and data["kernel_version"] == info["os"]["kernel"]
    assert data["metadata"]["default_name"] == info["hostname"] and data["metadata"]["cpu"] == info["cpu"]
    assert re.match(RFC3339, data["collected_at"])


def test_wrapper_forms_and_unknown_commands(wire):
    """docs/commands.md, "Requests": the `command` wrapper and the legacy `call` double wrapper."""
    wrapped = wire.ok("command", {"command": "agent.ping", "data": {"w": 1}})
    assert wrapped["echo"] == {"w": 1}
    legacy = wire.ok("call", {"type": "call", "call_id": "inner-ignored", "event": "agent.ping", "data": {"w": 2}})
    assert legacy["echo"] == {"w": 2}
    wire.refused("no.such.command", {}, "unimplemented", contains="unknown event: no.such.command")
    wire.refused("command", {"command": "no.such.command"}, "unimplemented",
                 contains="unknown command: no.such.command")
    wire.refused("command", {"data": {}}, "invalid_argument", contains="invalid command format")
    wire.refused("call", {"event": 5}, "invalid_argument", contains="invalid call message format")


@covers("agent.hardware.info", "server.stats.live", outcome="success")
def test_hardware_info_and_live_stats(wire):
    info = wire.ok("agent.hardware.info")
    assert set(info["cpu"]) >= {"model", "cores", "arch"} and info["cpu"]["arch"] in ("amd64", "arm64")
    assert info["memory"]["total"] > 0 and info["storage"]["total"] > 0 and "type" in info["storage"]
    assert all(set(i) >= {"name", "ip", "mac"} and "/" in i["ip"] for i in info["network"]["interfaces"])
    assert set(info["os"]) >= {"name", "version", "kernel"} and info["hostname"]
    assert info["public_ip"] == "unknown"      # PULSEUP_PUBLIC_IP_LOOKUP is false
    assert info["cpu_logical_count"] >= info["cpu_physical_cores"] >= 1
    assert info["total_memory_gb"] > 0 and info["storage_total_gb"] > 0
    stats = wire.ok("server.stats.live")
    assert set(stats) >= {"cpu_percent", "memory_used_gb", "memory_total_gb", "memory_usage_percent",
                          "disk_used_gb", "disk_total_gb", "disk_usage_percent", "network_bytes_in",
                          "network_bytes_out", "uptime_seconds", "load_avg_1", "load_avg_5", "load_avg_15",
                          "timestamp"}
    assert 0 <= stats["cpu_percent"] <= 100 and 0 < stats["memory_usage_percent"] <= 100
    assert stats["disk_total_gb"] >= stats["disk_used_gb"] > 0 and isinstance(stats["uptime_seconds"], int)
    assert re.match(RFC3339, stats["timestamp"]), stats["timestamp"]


@covers("agent.hardware.info", "server.stats.live", "agent.command.list", "agent.uninstall",
        outcome="refusal")
def test_commands_without_arguments_refuse_a_non_object_request(wire):
    for command in ("agent.hardware.info", "server.stats.live", "agent.command.list", "agent.uninstall"):
        wire.refused(command, ["not", "an", "object"], "invalid_argument")


@covers("agent.logs.fetch", outcome="success")
def test_agent_logs_come_from_the_ring_and_the_log_files(wire, e2e_agent):
    data = wire.ok("agent.logs.fetch", {"lines": 50})
    assert set(data) == {"logs", "sources", "truncated"}
    supervisor_log = os.path.join(e2e_agent.env["AGENT_LOG_DIR"], "supervisor.log")
    assert data["sources"] == ["ring_buffer", supervisor_log]
    assert 0 < len(data["logs"]) <= 50 and isinstance(data["truncated"], bool)
    # the supervisor's lines (root's process, read by the worker from the shared log file)
    everything = wire.ok("agent.logs.fetch", {"lines": 5000})
    assert len(everything["logs"]) > len(data["logs"]) or not data["truncated"]
    everything = everything["logs"]
    assert any('"supervisor.audit"' in line for line in everything)
    assert any('"component": "connection"' in line for line in everything)     # the worker's own
    assert e2e_agent.env["JOIN_TOKEN"] not in "\n".join(everything)


@covers("agent.logs.fetch", outcome="refusal")
def test_agent_logs_lines_out_of_range(wire):
    wire.refused("agent.logs.fetch", {"lines": 0}, "invalid_argument", field="lines")
    wire.refused("agent.logs.fetch", {"lines": 5001}, "invalid_argument", field="lines")
    wire.refused("agent.logs.fetch", {"lines": "10"}, "invalid_argument", field="lines")


@covers("agent.command.list", outcome="success")
def test_command_list_is_the_whitelist(wire):
    data = wire.ok("agent.command.list")
    assert [c["id"] for c in data["commands"]] == WHITELIST and data["total_commands"] == len(WHITELIST)
    for command in data["commands"]:
        assert set(command) >= {"id", "name", "description", "category", "requires_confirmation"}
        assert command["requires_confirmation"] is (command["id"] in CONFIRM)
        assert command["category"] == command["id"].split(".")[0]
        listed = [c["id"] for c in data["commands_by_category"][command["category"]]]
        assert command["id"] in listed


@covers("agent.command.execute", outcome="success")
def test_execute_runs_whitelisted_actions_through_the_supervisor(wire, e2e_agent):
    home = e2e_agent.home
    listed = wire.ok("agent.command.execute", {"command_id": "docker.list_all"})
    assert set(listed) >= {"output", "error", "timestamp", "exit_code", "duration_seconds"}
    assert listed["exit_code"] == 0 and re.match(RFC3339, listed["timestamp"])
    before = len(home.seam_runs())
    for command_id in ("system.reboot", "system.update_packages", "service.restart_docker"):
        data = wire.ok("agent.command.execute", {"command_id": command_id, "confirm": True})
        assert data["exit_code"] == 0, data
    ran = [[os.path.basename(argv[0]), *argv[1:]] for argv in home.seam_runs()[before:]]
    assert ran == [
        ["systemctl", "reboot"], ["apt-get", "-q", "update"],
        ["apt-get", "-q", "-y", "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold",
         "upgrade"],
        ["systemctl", "restart", "docker.service"]]


@covers("agent.command.execute", outcome="success")
def test_cleanup_logs_deletes_old_logs_outside_the_agents_own(wire, e2e_agent):
    roots = e2e_agent.home.dir("roots")
    old, own, fresh = (os.path.join(roots, "log", name) for name in ("old.log", "pulseup/worker.log", "new.log"))
    for path in (old, own, fresh):
        with open(path, "w") as handle:
            handle.write("x\n")
    month_ago = time.time() - 40 * 86400
    os.utime(old, (month_ago, month_ago))
    os.utime(own, (month_ago, month_ago))
    data = wire.ok("agent.command.execute", {"command_id": "disk.cleanup_logs"})
    assert data["exit_code"] == 0
    assert not os.path.exists(old) and os.path.exists(own) and os.path.exists(fresh)
    stale, recent = os.path.join(roots, "tmp", "stale"), os.path.join(roots, "tmp", "recent")
    for path in (stale, recent):
        with open(path, "w") as handle:
            handle.write("x\n")
    os.utime(stale, (time.time() - 8 * 86400, time.time()))      # not accessed for 8 days
    assert wire.ok("agent.command.execute", {"command_id": "disk.cleanup_temp"})["exit_code"] == 0
    assert not os.path.exists(stale) and os.path.exists(recent)


@covers("agent.command.execute", outcome="refusal")
def test_execute_refusals(wire, e2e_agent):
    before = len(e2e_agent.home.seam_runs())
    wire.refused("agent.command.execute", {"command_id": "rm.everything"}, "not_found")
    wire.refused("agent.command.execute", {"command_id": "system.reboot"}, "failed_precondition")
    wire.refused("agent.command.execute", {"command_id": "agent.update", "confirm": True}, "failed_precondition")
    wire.refused("agent.command.execute", {"command_id": "system.reboot", "confirm": "yes"}, "invalid_argument",
                 field="confirm")
    assert e2e_agent.home.seam_runs()[before:] == []      # nothing ran


@covers("agent.command.execute", outcome="refusal")
def test_execute_of_a_failing_program_is_command_failed(wire, e2e_agent):
    """docs/commands.md, `agent.command.execute`: a non-zero exit is command_failed with the
    output fields; the supervisor's stand-in seam makes `systemctl restart docker.service` fail."""
    failing = e2e_agent.home.seam_record + ".fail"
    with open(failing, "w") as handle:
        handle.write("systemctl restart docker.service\n")
    try:
        reply = wire.refused("agent.command.execute", {"command_id": "service.restart_docker", "confirm": True},
                             "command_failed")
    finally:
        os.unlink(failing)
    assert reply["error"].startswith("Command failed: "), reply
    data = reply["data"]
    assert data["exit_code"] == 3 and "stand-in failure of systemctl" in data["error"]
    assert re.match(RFC3339, data["timestamp"]) and data["duration_seconds"] >= 0 and "output" in data


@covers("agent.command.execute", outcome="success")
def test_agent_restart_restarts_the_worker_which_reconnects(wire, e2e_agent, worker_user):
    (before,) = e2e_agent.workers()
    assert before.uids().effective == worker_user.pw_uid
    mark = wire.mark()
    data = wire.ok("agent.command.execute", {"command_id": "agent.restart"})
    assert data["exit_code"] == 0
    wire.wait_events("register_hardware_info", since=mark, timeout=60)
    assert wire.connections(mark) >= 1
    assert wire.ok("agent.ping", {"after": "restart"})["echo"] == {"after": "restart"}
    (after,) = e2e_agent.workers()      # a new worker child, still unprivileged
    assert after.pid != before.pid and after.uids().effective == worker_user.pw_uid


@covers("agent.uninstall", outcome="success")
def test_uninstall_sets_the_flag_and_starts_the_packaged_uninstall(wire, e2e_agent):
    home = e2e_agent.home
    data = wire.ok("agent.uninstall")
    assert data == {"success": True, "message": "Agent uninstallation requested successfully"}
    flag = home.dir("roots/run/pulseup-agent/delete-needed")
    assert os.path.isfile(flag) and os.path.getsize(flag) == 0
    assert os.stat(flag).st_mode & 0o777 == 0o644 and os.stat(os.path.dirname(flag)).st_mode & 0o777 == 0o755
    deadline = time.monotonic() + 30
    while not os.path.exists(home.uninstall_record) and time.monotonic() < deadline:
        time.sleep(0.1)
    with open(home.uninstall_record) as handle:
        assert handle.read() == "uninstall stand-in ran as 0\n"     # started by the root supervisor
    assert wire.ok("agent.ping")["version"] == __version__      # the agent itself keeps running


@covers("agent.uninstall", outcome="refusal")
def test_uninstall_refused_when_the_flag_cannot_be_created(wire, e2e_agent):
    """docs/commands.md, `agent.uninstall`: cannot create the flag -> permission_denied, and the
    packaged uninstall is not started."""
    home = e2e_agent.home
    flag_dir = home.dir("roots/run/pulseup-agent")
    shutil.rmtree(flag_dir, ignore_errors=True)
    os.makedirs(os.path.dirname(flag_dir), exist_ok=True)
    with open(flag_dir, "w") as handle:          # a file where the flag's directory belongs
        handle.write("in the way\n")
    ran_before = os.path.exists(home.uninstall_record) and os.path.getsize(home.uninstall_record)
    try:
        wire.refused("agent.uninstall", None, "permission_denied", contains="cannot create")
    finally:
        os.unlink(flag_dir)
    time.sleep(1)
    ran_after = os.path.exists(home.uninstall_record) and os.path.getsize(home.uninstall_record)
    assert ran_after == ran_before


@covers("agent.update.check", "agent.update.apply", outcome="success")
def test_update_check_and_apply_with_nothing_newer(wire, devserver):
    data = wire.ok("agent.update.check")
    assert data["current_version"] == __version__ and data["update_available"] is False
    assert data["latest_version"] == __version__
    assert data["download_url"] == f"{devserver.url}/api/update/files/pulseup-agent.deb"
    assert data["checksum"] == "0" * 64 and data["changelog"] == f"release {__version__}"
    assert data["release_url"] == devserver.url + "/api/update/manifest"
    assert wire.ok("agent.update.apply") == {"message": "No updates available"}


@covers("agent.update.check", "agent.update.apply", outcome="refusal")
def test_update_refusals(wire, devserver):
    wire.refused("agent.update.apply", {"version": "9.9.9"}, "not_found", field="version")
    wire.refused("agent.update.apply", {"version": __version__}, "failed_precondition")
    wire.refused("agent.update.apply", {"version": "latest"}, "invalid_argument", field="version")
    signature = os.path.join(devserver.data_dir, "update", "manifest.json.sig")
    os.rename(signature, signature + ".away")
    try:
        wire.refused("agent.update.check", None, "unavailable")
    finally:
        os.rename(signature + ".away", signature)


@covers("agent.config_updated", outcome="success")
def test_config_updated_switches_auto_updates(wire):
    assert wire.ok("agent.config_updated", {"auto_updates_enabled": True}) == {}
    assert wire.ok("agent.config_updated", {"auto_updates_enabled": False}) == {}


@covers("agent.config_updated", outcome="refusal")
def test_config_updated_needs_a_boolean_and_is_not_wrappable(wire):
    wire.refused("agent.config_updated", {}, "invalid_argument", field="auto_updates_enabled")
    wire.refused("agent.config_updated", {"auto_updates_enabled": "yes"}, "invalid_argument",
                 field="auto_updates_enabled")
    reply = wire.call("command", {"command": "agent.config_updated", "data": {"auto_updates_enabled": True}})
    assert reply["success"] is False and reply["code"] == "unimplemented", reply


@covers("agent.operations.list", outcome="success")
def test_operations_list_without_running_operations(wire):
    assert wire.ok("agent.operations.list") == {"operations": []}
    assert wire.ok("agent.operations.list", {"service_uid": "nothing-here"}) == {"operations": []}


@covers("agent.operations.list", "agent.operations.cancel", outcome="refusal")
def test_operations_refusals(wire):
    wire.refused("agent.operations.list", {"service_uid": "../etc"}, "invalid_argument", field="service_uid")
    wire.refused("agent.operations.cancel", {"operation_id": "deploy:none"}, "not_found")
    wire.refused("agent.operations.cancel", {}, "invalid_argument")
    wire.refused("agent.operations.cancel", {"operation_id": "deploy:x", "call_id": "c-1"}, "invalid_argument")


def _public_key():
    return Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


@covers("server.ssh_key.add", "server.ssh_key.remove", outcome="success")
def test_ssh_keys_added_and_removed_by_the_supervisor(wire, ssh_user):
    key = _public_key()
    path = os.path.join(ssh_user.pw_dir, ".ssh", "authorized_keys")
    added = wire.ok("server.ssh_key.add", {"user": ssh_user.pw_name, "public_key": key, "comment": "e2e"})
    assert set(added) == {"user", "fingerprint", "added"} and added["added"] is True
    assert added["user"] == ssh_user.pw_name and re.match(r"^SHA256:[A-Za-z0-9+/]{43}$", added["fingerprint"])
    info = os.stat(path)
    assert (info.st_uid, info.st_mode & 0o777) == (ssh_user.pw_uid, 0o600)
    with open(path) as handle:
        assert handle.read() == key + " e2e\n"
    assert wire.ok("server.ssh_key.add", {"user": ssh_user.pw_name, "public_key": key})["added"] is False
    removed = wire.ok("server.ssh_key.remove", {"user": ssh_user.pw_name, "fingerprint": added["fingerprint"]})
    assert removed == {"user": ssh_user.pw_name, "fingerprint": added["fingerprint"], "removed": True}
    with open(path) as handle:
        assert handle.read() == ""
    again = wire.ok("server.ssh_key.remove", {"user": ssh_user.pw_name, "public_key": key})
    assert again["removed"] is False


@covers("server.ssh_key.add", "server.ssh_key.remove", outcome="refusal")
def test_ssh_key_refusals(wire, ssh_user):
    wire.refused("server.ssh_key.add", {"user": "root", "public_key": _public_key()}, "permission_denied",
                 field="user")
    wire.refused("server.ssh_key.add", {"user": ssh_user.pw_name, "public_key": "ssh-dss AAAA"},
                 "invalid_argument", field="public_key")
    wire.refused("server.ssh_key.remove", {"user": ssh_user.pw_name, "fingerprint": "MD5:00"}, "invalid_argument",
                 field="fingerprint")
    wire.refused("server.ssh_key.remove", {"user": ssh_user.pw_name}, "invalid_argument")
