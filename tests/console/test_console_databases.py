"""Databases through the console against a real worker process and PostgreSQL container
(tests/resilience/faults_support.py): deploy one from the form, back it up now, download
the backup (the agent uploads it to the dev server, which hands it out), restore it after
the confirmation step."""

import hashlib
import re

import pytest

from tests.console.browser import wait_for
from tests.console.conftest import CSRF, Client
from tests.resilience import faults_support as fs
from tests.resilience.faults_support import fault_env, home  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration
DOWNLOAD = re.compile(r'action="([^"]+/download)"[^>]*>.*?name="backup_uid" value="([^"]+)"')


def _page(client, path):
    page = client.get(path)
    assert page.status_code == 200, page.text
    return page.text


def _wait_job(devserver, uid, kind, timeout):
    job = [j for j in devserver.console.jobs.for_agent(uid) if j.kind == kind][0]
    wait_for(lambda: job.state != "running", "the %s job" % kind, timeout=timeout)
    assert job.state == "succeeded", job.error


def _deploy(client, devserver, uid, db_uid):
    base = "/console/agents/%s/databases" % uid
    csrf = CSRF.search(_page(client, base)).group(1)
    deployed = client.post(base, {"csrf": csrf, "service_uid": db_uid, "type": "postgresql",
                                  "password": fs.DB_PASSWORD})
    assert deployed.status_code == 303
    _wait_job(devserver, uid, "database", 240)
    page = _page(client, base)
    assert db_uid in page and "no backup" in page and fs.DB_PASSWORD not in page
    return base, csrf


def _backup_and_download(client, base, csrf, db_uid):
    """Back up now, then download the backup; returns its uid."""
    assert client.post(base + "/" + db_uid + "/backup", {"csrf": csrf}).status_code == 303
    page = wait_for(lambda: (lambda text: text if "backup_" in text else None)(
        _page(client, base)), "the backup in the list", timeout=240)
    action, backup_uid = DOWNLOAD.search(page).groups()
    got = client.post(action, {"csrf": csrf, "backup_uid": backup_uid})
    assert got.status_code == 303, got.text
    data = client.get(got.headers["location"])
    assert data.status_code == 200 and len(data.content) > 100
    listed = re.search(r"<code>([0-9a-f]{16})</code>", page).group(1)
    assert hashlib.sha256(data.content).hexdigest().startswith(listed)
    return backup_uid


def test_database_deploy_backup_download_restore(fault_env, home, devserver):
    env, db_uid = fault_env, fs.unique("console-db")
    worker = fs.WorkerProcess(home, devserver, DB_IMAGE_POSTGRESQL=env.image("postgresql"))
    client = Client(devserver)
    try:
        worker.start()
        client.login()
        base, csrf = _deploy(client, devserver, worker.uid, db_uid)
        backup_uid = _backup_and_download(client, base, csrf, db_uid)
        restore = base + "/" + db_uid + "/restore"
        ask = client.post(restore, {"csrf": csrf, "backup_uid": backup_uid})
        assert ask.status_code == 200 and 'name="confirm" value="yes"' in ask.text
        assert not [j for j in devserver.console.jobs.for_agent(worker.uid)
                    if j.kind == "restore"]
        assert client.post(restore, {"csrf": csrf, "backup_uid": backup_uid,
                                     "confirm": "yes"}).status_code == 303
        _wait_job(devserver, worker.uid, "restore", 300)
    finally:
        worker.stop()
        fs.remove_service(env, db_uid)
