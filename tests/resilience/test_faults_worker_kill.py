"""Worker SIGKILL in the middle of a deploy and of a backup (issue 13, "Faults").

A real worker process (``python -m agent worker`` as nobody) runs the operation called through
the devserver; it is SIGKILLed mid-operation and a new worker starts on the same STATE_DIR.
Then (docs/operations.md, "Restart recovery"): the interrupted call is answered ``internal`` "agent
restarted during operation", the operation gets its terminal ``failed`` event, the previous
app version still serves, earlier backups are intact, and the next operation succeeds.
"""

import hashlib
import os
import signal
import time

import gevent
import pytest

from tests.resilience import faults_support as fs
from tests.resilience.faults_support import fault_env, home, worker  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration
RESTARTED = "agent restarted during operation"
# ~40 MB of poorly compressible rows: the dump takes many 5 ms slices to get through
POPULATE = ("CREATE TABLE t AS SELECT g AS id, md5(random()::text) || md5(random()::text) AS v "
            "FROM generate_series(1, 500000) g")


def test_sigkill_during_deploy(fault_env, worker):
    env, uid = fault_env, fs.unique("kill-app")
    env.image("app")
    try:
        _, sha1 = env.git.add_repo(uid, {"Dockerfile": fs.app_dockerfile(), "index.html": "version one\n"})
        # version two answers only after 60 s: the deploy sits in its readiness gate
        sha2 = env.git.commit(uid, {"Dockerfile": fs.app_dockerfile(delay=60), "index.html": "version two\n"})
        worker.start()
        first = worker.call("service.app.deploy", fs.deploy_request(env, uid, "dep-1", sha1))
        assert first["success"], first
        active = first["data"]["container_name"]
        assert fs.app_answer(env, active) == "version one\n"

        call = gevent.spawn(worker.call, "service.app.deploy",
                            fs.deploy_request(env, uid, "dep-2", sha2, health_timeout_seconds=120),
                            240, "deploy-killed")
        worker.wait_frame("update_deployment_status",
                          lambda d: d.get("deployment_uid") == "dep-2" and d.get("phase") == "health_check")
        worker.kill()
        assert fs.app_answer(env, active) == "version one\n"

        worker.start()
        reply = call.get(timeout=120)
        # killed in the readiness gate, before switch_traffic: the candidate goes, version one serves
        assert (reply["success"], reply["code"]) == (False, "internal")
        assert reply["error"].startswith(RESTARTED + "; ") and f"{active} serves" in reply["error"], reply
        final = worker.wait_frame("update_deployment_status",
                                  lambda d: d.get("deployment_uid") == "dep-2" and d["status"] != "in_progress")
        assert (final["status"], final["code"]) == ("failed", "internal")
        assert final["error"] == reply["error"]
        assert fs.service_containers(env, uid) == [active]
        assert fs.app_answer(env, active) == "version one\n"

        # the next deploy succeeds: the killed one's candidate does not get in the way
        sha3 = env.git.commit(uid, {"Dockerfile": fs.app_dockerfile()})
        third = worker.call("service.app.deploy", fs.deploy_request(env, uid, "dep-3", sha3))
        assert third["success"], third
        assert fs.app_answer(env, third["data"]["container_name"]) == "version two\n"
        assert fs.service_containers(env, uid) == [third["data"]["container_name"]]
    finally:
        worker.stop()
        fs.remove_service(env, uid)


def _processes_in(container_id, comm):
    """Host pids of the processes named ``comm`` inside the container (its cgroup names it)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as handle:
                if handle.read().strip() != comm:
                    continue
            with open(f"/proc/{pid}/cgroup") as handle:
                if container_id in handle.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def _partials(directory):
    return {name: os.path.getsize(os.path.join(directory, name))
            for name in os.listdir(directory) if ".partial-" in name}


def _step_until_written(pid, directory, limit=60):
    """Let the stopped dump run in 5 ms slices until part of it reached the partial file."""
    deadline = time.monotonic() + limit
    while not any(_partials(directory).values()):
        assert time.monotonic() < deadline, "the dump never reached the backup file"
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.005)
        os.kill(pid, signal.SIGSTOP)
        gevent.sleep(0.2)           # what is in the pipe reaches the agent and its file


def _sha(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _backup(worker, uid, backup_uid):
    reply = worker.call("database.backup.create", {"service_uid": uid, "backup_uid": backup_uid})
    assert reply["success"], reply
    return reply["data"]


def test_sigkill_during_backup(fault_env, home, devserver):
    env, uid = fault_env, fs.unique("kill-db")
    worker = fs.WorkerProcess(home, devserver, DB_IMAGE_POSTGRESQL=env.image("postgresql"))
    directory = os.path.join(home.dir("backups"), uid)
    dump_pid = None
    try:
        worker.start()
        container = fs.postgres_with(env, worker, uid, POPULATE)
        good = _backup(worker, uid, "good-1")
        kept = {path: _sha(path) for path in (good["backup_path"], good["manifest_path"])}

        call = gevent.spawn(worker.call, "database.backup.create", {"service_uid": uid, "backup_uid": "bad-1"},
                            240, "backup-killed")
        with gevent.Timeout(60):
            while not (pids := _processes_in(container.id, "pg_dump")):
                gevent.sleep(0.002)
        dump_pid = pids[0]
        os.kill(dump_pid, signal.SIGSTOP)
        _step_until_written(dump_pid, directory)
        assert not call.ready(), "the dump finished before the worker could be killed"
        worker.kill()
        os.kill(dump_pid, signal.SIGCONT)

        worker.start()
        reply = call.get(timeout=60)
        assert (reply["success"], reply["code"], reply["error"]) == (False, "internal", RESTARTED)
        final = worker.wait_frame("backup_status_update", lambda d: d.get("backup_uid") == "bad-1"
                                  and d["status"] != "in_progress")
        assert (final["status"], final["error_code"], final["error_message"]) == ("failed", "internal", RESTARTED)

        listed = worker.call("database.backup.list", {"service_uid": uid})["data"]["backups"]
        assert [entry["backup_uid"] for entry in listed] == ["good-1"]
        assert {path: _sha(path) for path in kept} == kept
        # the half-written file of bad-1 went at the restart, the good one stayed
        assert sorted(os.listdir(directory)) == sorted(os.path.basename(path) for path in kept)

        again = _backup(worker, uid, "good-2")
        listed = worker.call("database.backup.list", {"service_uid": uid})["data"]["backups"]
        assert sorted(entry["backup_uid"] for entry in listed) == ["good-1", "good-2"]
        assert again["sha256"] == _sha(again["backup_path"])
    finally:
        if dump_pid is not None:
            _continue(dump_pid)
        worker.stop()
        fs.remove_service(env, uid)


def _continue(pid):
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass
