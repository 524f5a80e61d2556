"""Worker SIGKILL in the middle of a deploy and of a backup (issue 13, "Faults").

A real worker process (``python -m agent worker`` as nobody) runs the operation called through
the devserver; it is SIGKILLed mid-operation and a new worker starts on the same STATE_DIR.
Then (decisions 5, commands.md 1.8.7): the interrupted call is answered ``internal`` "agent
restarted during operation", the operation gets its terminal ``failed`` event, the previous
app version still serves, earlier backups are intact, and the next operation succeeds.
"""

import gevent
import pytest

from tests.resilience import faults_support as fs

pytestmark = pytest.mark.integration
RESTARTED = "agent restarted during operation"


@pytest.fixture(scope="session")
def fault_env(request):
    return fs.environment(request.config)


@pytest.fixture
def home(fault_env):
    home = fs.AgentHome(fault_env)
    yield home
    home.remove()


@pytest.fixture
def worker(home, devserver):
    worker = fs.WorkerProcess(home, devserver)
    yield worker
    worker.stop()


def test_sigkill_during_deploy(fault_env, worker):
    env, uid = fault_env, "kill-app"
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
        reply = call.get(timeout=60)
        assert (reply["success"], reply["code"], reply["error"]) == (False, "internal", RESTARTED)
        final = worker.wait_frame("update_deployment_status",
                                  lambda d: d.get("deployment_uid") == "dep-2" and d["status"] != "in_progress")
        assert (final["status"], final["code"], final["error"]) == ("failed", "internal", RESTARTED)
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
