"""dockerd restarted in the middle of a deploy (issue 13; docs/hosts.md, "Docker engine").

Without ``--live-restore`` the engine stops every container when it stops; afterwards the
previous version serves again (restart policy ``unless-stopped``), the interrupted deploy
reports ``failed`` with a clear code and message, and the agent keeps working: the next
deploy succeeds and leaves one container.
"""

import gevent
import pytest
import requests

from tests.resilience import faults_support as fs
from tests.resilience.faults_support import fault_env, home, worker  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration


def _serves(env, name, body, timeout=60):
    deadline = gevent.Timeout(timeout, AssertionError(f"{name} does not serve {body!r}"))
    with deadline:
        while True:
            try:
                if fs.app_answer(env, name, timeout=2) == body:
                    return
            except (requests.RequestException, KeyError, TypeError):
                pass                    # restarting: no address yet, or not listening yet
            gevent.sleep(0.25)


def test_engine_restart_during_deploy(fault_env, worker):
    env, uid = fault_env, fs.unique("engine")
    env.image("app")
    try:
        _, sha1 = env.git.add_repo(uid, {"Dockerfile": fs.app_dockerfile(), "index.html": "version one\n"})
        sha2 = env.git.commit(uid, {"Dockerfile": fs.app_dockerfile(delay=60), "index.html": "version two\n"})
        worker.start()
        first = worker.call("service.app.deploy", fs.deploy_request(env, uid, "dep-1", sha1))
        assert first["success"], first
        active = first["data"]["container_name"]

        call = gevent.spawn(worker.call, "service.app.deploy",
                            fs.deploy_request(env, uid, "dep-2", sha2, health_timeout_seconds=120), 240)
        worker.wait_frame("update_deployment_status",
                          lambda d: d.get("deployment_uid") == "dep-2" and d.get("phase") == "health_check")
        env.engine.restart()

        reply = call.get(timeout=180)
        assert reply["success"] is False and reply["code"] in ("unavailable", "health_check_failed"), reply
        assert reply["error"], reply
        final = worker.wait_frame("update_deployment_status",
                                  lambda d: d.get("deployment_uid") == "dep-2" and d["status"] != "in_progress")
        assert (final["status"], final["code"]) == ("failed", reply["code"]), final
        _serves(env, active, "version one\n")
        assert worker.proc.poll() is None, "the worker died with the engine"

        sha3 = env.git.commit(uid, {"Dockerfile": fs.app_dockerfile()})
        third = worker.call("service.app.deploy", fs.deploy_request(env, uid, "dep-3", sha3))
        assert third["success"], third
        _serves(env, third["data"]["container_name"], "version two\n")
        assert fs.service_containers(env, uid) == [third["data"]["container_name"]]
    finally:
        worker.stop()
        fs.remove_service(env, uid)
