"""A worker killed at every phase boundary of a swap leaves one version (issue 16 item 7).

A real worker (``python -m agent worker`` as nobody) SIGKILLs itself right after it recorded
the phase named by ``PULSEUP_FAULT_KILL_AT`` (agent/services/interrupted.py): the kill is
triggered by the phase, never by a sleep. A new worker starts on the same STATE_DIR, and from
outside the test checks what docs/operations.md "Restart recovery" promises: the engine holds
exactly one app container of the service and it answers HTTP with the expected version, the
devserver received the operation's terminal status and ``update_service_status``, and the
interrupted call's answer (``internal``, "agent restarted during operation; ...") names the
container that serves.
"""

import json
import os

import gevent
import pytest

from tests.resilience import faults_support as fs
from tests.resilience.faults_support import fault_env, home, worker  # noqa: F401 (fixtures)
from harness import free_port

pytestmark = pytest.mark.integration
RESTARTED = "agent restarted during operation"
ONE, TWO = "version one\n", "version two\n"


def _name(uid, version):
    return f"pulseup-app-{uid}-v{version:04d}"


def _two_versions(env, uid):
    _, sha1 = env.git.add_repo(uid, {"Dockerfile": fs.app_dockerfile(), "index.html": ONE})
    sha2 = env.git.commit(uid, {"index.html": TWO})
    return sha1, sha2


def _crash_during(worker, point, event, data, call_id):
    """Restart the worker armed with ``point``, call, wait for the self-kill, restart it
    unarmed; returns the interrupted call's answer."""
    worker.stop()
    worker.crash_at(point)
    worker.start()
    call = gevent.spawn(worker.call, event, data, 300, call_id)
    worker.wait_crashed()
    worker.crash_at(None)
    worker.start()
    return call.get(timeout=240)


def _check_answer(reply, serving):
    assert (reply["success"], reply["code"]) == (False, "internal"), reply
    assert reply["error"].startswith(RESTARTED + "; "), reply
    if serving:
        assert f"{serving} serves" in reply["error"], reply
    assert reply["data"]["serving_container"] == serving, reply


def _check_one_version(env, worker, uid, serving, text):
    assert fs.service_containers(env, uid) == [serving]
    assert env.client.containers.get(serving).status == "running"
    assert fs.app_answer(env, serving) == text
    status = worker.wait_frame("update_service_status", lambda d: d.get("service_uid") == uid
                               and RESTARTED in (d.get("message") or d.get("error") or ""))
    assert status["status"] == "running" and serving in status["message"], status


# phase -> (deployment status, version that serves, the text it serves)
BLUE_GREEN = {"deploy_container": ("failed", 1, ONE), "health_check": ("failed", 1, ONE),
              "switch_traffic": ("completed", 2, TWO), "cleanup": ("completed", 2, TWO),
              "done": ("completed", 2, TWO)}
SINGLE_SLOT = {"stop_previous": ("failed", 1, ONE), "health_check": ("failed", 1, ONE),
               "switch_traffic": ("completed", 2, TWO), "cleanup": ("completed", 2, TWO)}


@pytest.mark.parametrize("mode, phase", [("blue_green", p) for p in BLUE_GREEN]
                         + [("single_slot", p) for p in SINGLE_SLOT])
def test_deploy_killed_at_phase(fault_env, worker, mode, phase):
    env, uid = fault_env, fs.unique(f"ph-{phase[:6]}")
    env.image("app")
    extra = {"exposed_port": free_port()} if mode == "single_slot" else {}
    expected, version, text = (BLUE_GREEN if mode == "blue_green" else SINGLE_SLOT)[phase]
    try:
        sha1, sha2 = _two_versions(env, uid)
        worker.start()
        first = worker.call("service.app.deploy", fs.deploy_request(env, uid, "dep-1", sha1, **extra))
        assert first["success"] and first["data"]["swap_mode"] == mode, first
        reply = _crash_during(worker, f"deploy:{phase}", "service.app.deploy",
                              fs.deploy_request(env, uid, "dep-2", sha2, **extra), f"deploy-{phase}")
        serving = _name(uid, version)
        _check_answer(reply, serving)
        final = worker.wait_frame("update_deployment_status",
                                  lambda d: d.get("deployment_uid") == "dep-2" and d["status"] != "in_progress")
        assert final["status"] == expected, final
        assert serving in (final.get("message") or final.get("error")), final
        _check_one_version(env, worker, uid, serving, text)
        if phase == "cleanup":          # the next deploy is not in the way of anything
            sha3 = env.git.commit(uid, {"index.html": "version three\n"})
            third = worker.call("service.app.deploy", fs.deploy_request(env, uid, "dep-3", sha3, **extra))
            assert third["success"], third
            assert fs.service_containers(env, uid) == [_name(uid, 3)]
    finally:
        worker.stop()
        fs.remove_service(env, uid)


@pytest.mark.parametrize("phase, expected, version, text", [("health_check", "failed", 2, TWO),
                                                            ("switch_traffic", "running", 3, ONE)])
def test_rollback_killed_at_phase(fault_env, worker, phase, expected, version, text):
    env, uid = fault_env, fs.unique(f"rb-{phase[:6]}")
    env.image("app")
    try:
        sha1, sha2 = _two_versions(env, uid)
        worker.start()
        for dep, sha in (("dep-1", sha1), ("dep-2", sha2)):
            deployed = worker.call("service.app.deploy", fs.deploy_request(env, uid, dep, sha))
            assert deployed["success"], deployed
        reply = _crash_during(worker, f"rollback:{phase}", "service.deploy.rollback",
                              {"service_uid": uid}, f"rollback-{phase}")
        serving = _name(uid, version)
        _check_answer(reply, serving)
        final = worker.wait_frame("rollback_status_update", lambda d: d.get("service_uid") == uid
                                  and d["status"] != "rolling_back")
        assert final["status"] == expected and serving in final["message"], final
        _check_one_version(env, worker, uid, serving, text)
    finally:
        worker.stop()
        fs.remove_service(env, uid)


def _rows(container):
    return fs.exec_ok(container, ["psql", "-U", "admin", "-d", "app", "-tAc", "SELECT string_agg(id::text, ',' "
                                  "ORDER BY id) FROM t"]).strip()


def _service_statuses(worker, uid):
    return [d for d in worker.frames("update_service_status") if d.get("service_uid") == uid]


@pytest.mark.parametrize("phase", ["safety_backup", "writing"])
def test_restore_killed_at_phase(fault_env, home, devserver, phase):
    env, uid = fault_env, fs.unique(f"rs-{phase[:6]}")
    worker = fs.WorkerProcess(home, devserver, DB_IMAGE_POSTGRESQL=env.image("postgresql"))
    try:
        worker.start()
        container = fs.postgres_with(env, worker, uid, "CREATE TABLE t AS SELECT 1 AS id")
        old = worker.call("database.backup.create", {"service_uid": uid, "backup_uid": "old-1"})
        assert old["success"], old
        fs.exec_ok(container, ["psql", "-U", "admin", "-d", "app", "-qc", "INSERT INTO t VALUES (2), (3)"])

        reply = _crash_during(worker, f"restore:{phase}", "database.backup.restore",
                              {"service_uid": uid, "backup_uid": "old-1"}, f"restore-{phase}")
        assert (reply["success"], reply["code"]) == (False, "internal"), reply
        assert reply["error"].startswith(RESTARTED + "; "), reply
        last = worker.wait_frame("update_service_status", lambda d: d.get("service_uid") == uid
                                 and RESTARTED in (d.get("message") or d.get("error") or ""))
        assert _service_statuses(worker, uid)[-1]["status"] != "deploying"
        container.reload()
        assert container.status == "running"
        if phase == "safety_backup":        # nothing was written: the data is as it was
            assert last["status"] == "running" and "before the data was changed" in last["message"], last
            assert _rows(container) == "1,2,3"
            return
        safety = reply["data"]["safety_backup_path"]
        assert safety and safety in reply["error"] and safety in last["error"], (reply, last)
        assert last["status"] == "failed"
        # the safety backup is valid and gives back the data from before the restore
        back = worker.call("database.backup.restore", {"service_uid": uid, "backup_path": safety,
                                                       "safety_backup": False})
        assert back["success"], back
        assert _rows(container) == "1,2,3"
    finally:
        worker.stop()
        fs.remove_service(env, uid)


def _recorded_phase(home):
    """Phases of the records in the worker's STATE_DIR/recovery (read as root from outside)."""
    directory = os.path.join(home.dir("state"), "recovery")
    phases = []
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        try:
            with open(os.path.join(directory, name)) as handle:
                phases.append(json.load(handle).get("phase"))
        except (OSError, ValueError):
            pass            # a temporary file being renamed
    return phases


def test_killed_while_draining_the_previous_version(fault_env, home, worker):
    """The case of issue 16: killed from outside during the drain, past the point of no return;
    the restarted worker finishes the switch instead of leaving both versions running."""
    env, uid = fault_env, fs.unique("ph-drain")
    env.image("app")
    try:
        sha1, sha2 = _two_versions(env, uid)
        worker.start()
        assert worker.call("service.app.deploy", fs.deploy_request(env, uid, "dep-1", sha1))["success"]
        call = gevent.spawn(worker.call, "service.app.deploy",
                            fs.deploy_request(env, uid, "dep-2", sha2, drain_seconds=300), 900, "deploy-drain")
        with gevent.Timeout(240):
            while "cleanup" not in _recorded_phase(home):
                assert not call.ready(), call.value
                gevent.sleep(0.05)
        assert fs.service_containers(env, uid) == [_name(uid, 1), _name(uid, 2)]     # draining
        worker.kill()
        worker.start()
        reply = call.get(timeout=240)
        _check_answer(reply, _name(uid, 2))
        final = worker.wait_frame("update_deployment_status",
                                  lambda d: d.get("deployment_uid") == "dep-2" and d["status"] != "in_progress")
        assert final["status"] == "completed", final
        _check_one_version(env, worker, uid, _name(uid, 2), TWO)
        assert _recorded_phase(home) == []
    finally:
        worker.stop()
        fs.remove_service(env, uid)
