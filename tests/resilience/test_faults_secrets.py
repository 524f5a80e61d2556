"""Secrets of the deploy and database flows (issue 13 "Secrets"; docs/security.md, "Secret redaction" and "Git").

A real worker process (DEBUG logging) deploys an app with a distinctive git token and a
secret environment value, is refused a clone with another distinctive token, provisions a
PostgreSQL database with a distinctive password, backs it up and fails a backup. None of the
values may appear in any log line of the worker or the devserver, any file under STATE_DIR,
CERT_DIR, the apps, deployment, deployment log or backup directories, any frame the devserver
received, or any process's argv while the flows run. (Enrollment secrets: test_secrets.py.)
"""

import logging
import os
import secrets
import subprocess

import pytest

from tests.resilience import faults_support as fs
from tests.resilience.faults_support import fault_env, home  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration
BAD_TOKEN = "ghp_CanaryRefused" + secrets.token_hex(12)


def _app_flows(worker, env, uid):
    _, sha = env.git.add_repo(uid, {"Dockerfile": fs.app_dockerfile(), "index.html": "secret app\n"})
    reply = worker.call("service.app.deploy", fs.deploy_request(
        env, uid, "sec-dep-1", sha, env_vars={"API_KEY": fs.ENV_SECRET}))
    assert reply["success"], reply
    container = env.client.containers.get(reply["data"]["container_name"])
    assert f"API_KEY={fs.ENV_SECRET}" in container.attrs["Config"]["Env"]     # control: it was used
    # a commit the agent does not have yet, so the refused token really goes to the git server
    # (a commit already fetched is deployed without asking the remote again)
    newer = env.git.commit(uid, {"index.html": "secret app, second\n"}, message="second")
    refused = worker.call("service.app.deploy", fs.deploy_request(
        env, uid, "sec-dep-2", newer, access_token=BAD_TOKEN, env_vars={"API_KEY": fs.ENV_SECRET}))
    assert refused["success"] is False, refused


def _database_flows(worker, uid):
    deployed = worker.call("database.deploy", {"service_uid": uid, "type": "postgresql", "password": fs.DB_PASSWORD})
    assert deployed["success"], deployed
    backup = worker.call("database.backup.create", {"service_uid": uid, "backup_uid": "sec-1"})
    assert backup["success"], backup
    failed = worker.call("database.backup.create", {"service_uid": uid, "backup_uid": "sec-2",
                                                    "database": "no_such_db"})
    assert (failed["success"], failed["code"]) == (False, "command_failed"), failed


def test_no_secret_in_logs_files_frames_or_argv(fault_env, home, devserver, caplog):
    env = fault_env
    caplog.set_level(logging.DEBUG, logger="agent")
    app_uid, db_uid = fs.unique("secret-app"), fs.unique("secret-db")
    values = (fs.GIT_TOKEN, BAD_TOKEN, fs.ENV_SECRET, fs.DB_PASSWORD)
    env.image("app")
    worker = fs.WorkerProcess(home, devserver, DB_IMAGE_POSTGRESQL=env.image("postgresql"))
    control = "Canary-Control-" + secrets.token_hex(8)
    scanner = fs.ArgvScanner(*values, control)
    try:
        subprocess.run(["sh", "-c", "sleep 0.5", "sh", control], check=True, timeout=30)
        worker.start()
        _app_flows(worker, env, app_uid)
        _database_flows(worker, db_uid)
        frames = repr(devserver.received_frames(worker.uid))
    finally:
        scanner.finish()
        worker.stop()
        fs.remove_service(env, app_uid)
        fs.remove_service(env, db_uid)
    output = worker.output()
    # controls: the flows ran and were logged, the scanned directories hold their files
    assert f"deployment sec-dep-2 of service {app_uid} ended: permission_denied" in output
    assert os.listdir(os.path.join(home.dir("backups"), db_uid))       # control: the scanned dirs hold data
    assert [leak for leak in scanner.leaks if control in leak]     # control: short-lived argv are seen
    assert [leak for leak in scanner.leaks if control not in leak] == []
    for value in values:
        assert value not in output, value
        assert [r.getMessage() for r in caplog.records if value in r.getMessage()] == []
        assert fs.files_holding(value, *home.secret_dirs()) == []
        assert value not in frames
