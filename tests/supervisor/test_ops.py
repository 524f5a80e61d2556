"""The allow-listed ops through the recording seam (docs/protocol.md, "Supervisor IPC"; docs/design.md,
"Testing privileged operations")."""

import os
import signal
import time

import pytest

from agent.supervisor.dispatch import OpDispatcher
from agent.supervisor.seam import RunResult
from tests.supervisor.conftest import request

DAY = 86400


def test_reboot_and_shutdown_argv(dispatcher, seam):
    reply, _ = dispatcher.handle(request("system.reboot"))
    assert reply == {"id": "r1", "ok": True, "result": {"requested": "reboot"}}
    dispatcher.handle(request("system.shutdown", rid="r2"))
    assert seam.argvs == [["systemctl", "reboot"], ["systemctl", "poweroff"]]


def test_failed_program_reports_exit_code(dispatcher, seam):
    seam.results["systemctl"] = RunResult(1, "", "Failed to connect to bus")
    reply, _ = dispatcher.handle(request("system.reboot"))
    assert reply["ok"] is False
    assert reply["error"]["code"] == "failed"
    assert reply["error"]["reason"] == "command_failed"
    assert reply["error"]["exit_code"] == 1
    assert "Failed to connect" in reply["error"]["stderr_tail"]


def test_missing_program_is_failed_precondition(dispatcher, seam):
    seam.results["systemctl"] = FileNotFoundError(2, "No such file or directory")
    reply, _ = dispatcher.handle(request("system.shutdown"))
    assert reply["error"]["code"] == "failed" and reply["error"]["reason"] == "failed_precondition"


def test_update_packages_apt(dispatcher, seam):
    reply, _ = dispatcher.handle(request("system.update_packages"))
    assert reply["result"]["manager"] == "apt-get" and reply["result"]["output"] == "ok\n"
    assert seam.argvs == [
        ["/usr/bin/apt-get", "-q", "update"],
        ["/usr/bin/apt-get", "-q", "-y", "-o", "Dpkg::Options::=--force-confdef", "-o",
         "Dpkg::Options::=--force-confold", "upgrade"],
    ]
    assert all(env == {"DEBIAN_FRONTEND": "noninteractive"} for _, env, _ in seam.runs)


@pytest.mark.parametrize("present,argvs", [
    ({"dnf", "yum"}, [["/usr/bin/dnf", "-y", "makecache"], ["/usr/bin/dnf", "-y", "upgrade"]]),
    ({"yum"}, [["/usr/bin/yum", "-y", "makecache"], ["/usr/bin/yum", "-y", "update"]]),
    ({"pacman"}, [["/usr/bin/pacman", "-Syu", "--noconfirm"]]),
])
def test_update_packages_other_managers(dispatcher, seam, present, argvs):
    seam.present = present
    reply, _ = dispatcher.handle(request("system.update_packages"))
    assert reply["ok"] and seam.argvs == argvs


def test_update_packages_none(dispatcher, seam):
    seam.present = {"systemctl"}
    reply, _ = dispatcher.handle(request("system.update_packages"))
    assert reply["error"]["reason"] == "failed_precondition" and seam.runs == []


def test_update_stops_at_first_failure(dispatcher, seam):
    seam.results["apt-get"] = RunResult(100, "", "E: Could not get lock")
    reply, _ = dispatcher.handle(request("system.update_packages"))
    assert reply["error"]["reason"] == "command_failed"
    assert reply["error"]["exit_code"] == 100 and len(seam.runs) == 1
    assert "Could not get lock" in reply["error"]["stderr_tail"]


def test_missing_manager_binary_ends_the_run(dispatcher, host, seam):
    seam.results["apt-get"] = FileNotFoundError(2, "No such file or directory")
    reply, _ = dispatcher.handle(request("system.update_packages"))
    assert reply["error"]["reason"] == "failed_precondition"
    assert host.package_runner().status()["run"]["state"] == "error"


def wait_until(predicate, seconds=20.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def status(dispatcher, rid="s1"):
    reply, _ = dispatcher.handle(request("system.package_status", rid=rid))
    assert reply["ok"], reply
    return reply["result"]


def test_status_without_a_run(dispatcher):
    assert status(dispatcher) == {"running": False, "run": None}


def test_wait_expires_but_the_run_goes_on(dispatcher, seam):
    seam.hold = True
    reply, _ = dispatcher.handle(request("system.update_packages", timeout=0.5))
    assert reply["error"]["reason"] == "deadline_exceeded"
    assert "still running" in reply["error"]["message"] and reply["error"]["run_id"]
    assert seam.killed == [] and seam.procs[0].returncode is None
    now = status(dispatcher)
    assert now["running"] and now["run"]["state"] == "running" and now["run"]["pid"] == seam.procs[0].pid
    assert now["run"]["run_id"] == reply["error"]["run_id"]
    seam.hold = False
    seam.procs[0].release.set()
    wait_until(lambda: not status(dispatcher)["running"])
    done = status(dispatcher)["run"]
    assert done["state"] == "succeeded" and done["exit_code"] == 0 and len(seam.runs) == 2
    assert seam.killed == []


def test_a_request_during_a_run_joins_it(dispatcher, seam):
    seam.hold = True
    first, _ = dispatcher.handle(request("system.update_packages", timeout=0.2))
    second, _ = dispatcher.handle(request("system.update_packages", rid="r2", timeout=0.2))
    assert first["error"]["run_id"] == second["error"]["run_id"]
    assert len(seam.procs) == 1                    # one apt-get, not two
    seam.hold = False
    seam.procs[0].release.set()
    third, _ = dispatcher.handle(request("system.update_packages", rid="r3", timeout=30))
    assert third["ok"] and third["result"]["run_id"] == first["error"]["run_id"]


def test_the_run_deadline_sends_sigterm_never_sigkill(host, seam, caplog):
    host.package_deadline = 0.3
    seam.hold = True
    reply, _ = OpDispatcher(host).handle(request("system.update_packages", timeout=30))
    assert reply["error"]["reason"] == "deadline_exceeded" and "SIGTERM" in reply["error"]["message"]
    assert seam.killed == [(seam.procs[0].pid, signal.SIGTERM)]
    run = host.package_runner().status()["run"]
    assert run["state"] == "terminated" and run["exit_code"] == -signal.SIGTERM
    assert len(seam.procs) == 1                    # the upgrade step never started
    assert any(getattr(r, "state", None) == "terminated" for r in caplog.records)


def test_the_wait_is_the_callers_timeout_capped_by_the_op(dispatcher, seam):
    seam.hold = True
    started = time.monotonic()
    reply, _ = dispatcher.handle(request("system.update_packages", timeout=1.0))
    assert reply["error"]["reason"] == "deadline_exceeded"
    assert time.monotonic() - started < 10     # answered before the caller's 1 s wait ends, not 3600 s
    seam.hold = False
    seam.procs[0].release.set()


def test_restart_docker(dispatcher, seam):
    reply, call = dispatcher.handle(request("service.restart", {"unit": "docker"}))
    assert reply["result"] == {"unit": "docker", "via": "systemd"}
    assert seam.argvs == [["systemctl", "restart", "docker.service"]] and call.after == []


def test_restart_worker_under_systemd_runs_after_reply(dispatcher, seam):
    reply, call = dispatcher.handle(request("service.restart", {"unit": "pulseup-worker"}))
    assert reply["ok"] and seam.runs == []
    for func in call.after:
        func()
    assert seam.argvs == [["systemctl", "restart", "--no-block", "pulseup-worker.service"]]


def test_restart_worker_in_run_mode_uses_the_arbiter(dispatcher, host, seam):
    restarts = []
    host.restart_worker = lambda: restarts.append(1)
    reply, call = dispatcher.handle(request("service.restart", {"unit": "pulseup-worker"}))
    assert reply["result"]["via"] == "supervisor" and restarts == []
    call.after[0]()
    assert restarts == [1] and seam.runs == []


@pytest.mark.parametrize("unit", ["caddy", "ssh", "docker; reboot", "docker.service", "../docker", 5, None])
def test_restart_refuses_other_units(dispatcher, seam, unit):
    reply, call = dispatcher.handle(request("service.restart", {"unit": unit}))
    assert reply["error"]["code"] == "invalid_argument" and reply["error"]["field"] == "unit"
    assert call is None and seam.runs == []


def test_unknown_op(dispatcher, seam):
    for name in ("os.system", "__class__", "run", "system.reboot.now", "ops.OPS"):
        reply, call = dispatcher.handle(request(name))
        assert reply["error"]["code"] == "unknown_op" and call is None
    assert seam.runs == []


def test_disabled_op_is_permission_denied(host, seam):
    host.cfg = host.cfg.replace(pulseup_disabled_commands=("system.reboot",))
    reply, _ = OpDispatcher(host).handle(request("system.reboot"))
    assert reply["error"]["code"] == "permission_denied" and seam.runs == []


def test_rate_limit_window(host, seam):
    now = [1000.0]
    dispatcher = OpDispatcher(host, clock=lambda: now[0])
    codes = [dispatcher.handle(request("system.reboot", rid=str(i)))[0].get("error", {}).get("code")
             for i in range(3)]
    assert codes == [None, None, "rate_limited"] and len(seam.runs) == 2
    now[0] += 61
    assert dispatcher.handle(request("system.reboot"))[0]["ok"]


def test_invalid_args_do_not_count_against_the_rate(host, seam):
    dispatcher = OpDispatcher(host)
    for _ in range(20):
        dispatcher.handle(request("service.restart", {"unit": "nope"}))
    assert dispatcher.handle(request("service.restart", {"unit": "docker"}))[0]["ok"]


def _file(path, age_days, attr="both", data=b"x" * 10):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    old = time.time() - age_days * DAY
    os.utime(path, (old, old))
    return path


def test_cleanup_logs(dispatcher, roots, tmp_path):
    logs = tmp_path / "log"
    old = _file(logs / "old.log", 31)
    nested = _file(logs / "app" / "nested.log", 40)
    fresh = _file(logs / "fresh.log", 2)
    other = _file(logs / "old.txt", 90)
    ours = _file(logs / "pulseup" / "worker.log", 90)
    outside = _file(tmp_path / "elsewhere" / "keep.log", 90)
    (logs / "link.log").symlink_to(outside)
    (logs / "linkdir").symlink_to(outside.parent)
    reply, _ = dispatcher.handle(request("disk.cleanup_logs"))
    assert reply["result"] == {"root": roots.logs, "deleted_files": 2, "freed_bytes": 20}
    assert not old.exists() and not nested.exists()
    assert fresh.exists() and other.exists() and ours.exists() and outside.exists()
    assert (logs / "link.log").is_symlink()


def test_cleanup_temp_uses_access_time(dispatcher, roots, tmp_path):
    temp = tmp_path / "tmp"
    stale = _file(temp / "stale", 8)
    recent = _file(temp / "dir" / "recent", 1)
    accessed = _file(temp / "accessed", 30)
    os.utime(accessed, (time.time(), time.time() - 30 * DAY))
    reply, _ = dispatcher.handle(request("disk.cleanup_temp"))
    assert reply["result"]["deleted_files"] == 1
    assert not stale.exists() and recent.exists() and accessed.exists()


def test_cleanup_takes_no_path(dispatcher, roots, tmp_path):
    victim = _file(tmp_path / "victim" / "a.log", 90)
    reply, _ = dispatcher.handle(request("disk.cleanup_logs", {"root": str(victim.parent), "path": "../victim"}))
    assert reply["result"]["root"] == roots.logs and victim.exists()


def test_uninstall_writes_flag_then_starts_after_reply(dispatcher, roots, seam):
    reply, call = dispatcher.handle(request("agent.uninstall"))
    assert reply["result"] == {"flag": roots.uninstall_flag}
    assert os.path.isfile(roots.uninstall_flag)
    assert oct(os.stat(os.path.dirname(roots.uninstall_flag)).st_mode & 0o777) == "0o755"
    assert seam.spawned == []
    for func in call.after:
        func()
    assert seam.spawned == [["/usr/lib/pulseup-agent/uninstall"]]


def test_uninstall_flag_unwritable_is_permission_denied(host, seam, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    host.roots = type(host.roots)(uninstall_flag=str(blocker / "sub" / "delete-needed"))
    reply, call = OpDispatcher(host).handle(request("agent.uninstall"))
    assert reply["error"]["code"] == "permission_denied" and seam.spawned == []


def test_update_install_frame(dispatcher):
    reply, _ = dispatcher.handle(request("agent.update.install", {"version": "1.2.3", "file_name": "a_1.2.3.deb"}))
    # nothing spooled: the op refuses before touching anything (tests/unit/test_update_supervisor.py)
    assert reply["error"]["code"] == "failed" and reply["error"]["reason"] == "failed_precondition"
    for args in ({"version": "1.2", "file_name": "a.deb"}, {"version": "1.2.3", "file_name": "../x.deb"},
                 {"version": "1.2.3", "file_name": "/tmp/a.deb"}, {"version": "1.2.3"}):
        reply, _ = dispatcher.handle(request("agent.update.install", args))
        assert reply["error"]["code"] == "invalid_argument"


def test_worker_status_is_stored(dispatcher, host):
    reply, _ = dispatcher.handle(request("worker.status", {"connected": True, "version": "1.0.0"}))
    assert reply == {"id": "r1", "ok": True, "result": {}}
    assert host.worker_status["connected"] is True and host.worker_status["version"] == "1.0.0"
    reply, _ = dispatcher.handle(request("worker.status", {"connected": "yes", "version": "1"}))
    assert reply["error"]["field"] == "connected"


def test_op_crash_is_failed_internal(host):
    from agent.supervisor.ops import OPS, NoArguments, Op
    ops = dict(OPS, **{"test.crash": Op(NoArguments, lambda call, args: 1 / 0, (5, 1.0), 1.0)})
    reply, call = OpDispatcher(host, ops=ops).handle(request("test.crash"))
    assert reply["error"]["reason"] == "internal" and call.after == []


def test_supervisor_status_is_read_only(dispatcher, host):
    dispatcher.handle(request("worker.status", {"connected": True, "version": "1.2.3"}))
    before = dict(host.worker_status)
    reply, _ = dispatcher.handle(request("supervisor.status", {}))
    assert reply["ok"], reply
    result = reply["result"]
    assert result["pid"] == os.getpid() and result["uptime_seconds"] >= 0
    assert result["worker"]["connected"] is True and result["worker"]["version"] == "1.2.3"
    assert result["package_run_active"] is False
    assert host.worker_status == before
