"""End to end: the installed package enrolls against the devserver and answers agent.ping.

The supervisor and the worker are started from their installed unit files
(same commands, users, groups, directories; see unitrun.py), as systemd would.
"""

import os
import pwd
import shutil
import tempfile
import time

import pytest

from agent.devserver.server import DevServer
from debtools import installed_version, run
from unitrun import UnitProcess

UNITS = "/lib/systemd/system"
CONFIG = "/etc/pulseup-agent/config"
CA_COPY = "/etc/pulseup-agent/test-devserver-ca.crt"


@pytest.fixture
def devserver(tmp_path):
    server = DevServer(str(tmp_path / "devserver"), listen="127.0.0.1:0").start()
    yield server
    server.stop()


@pytest.fixture
def configured(installed, devserver):
    """The operator's steps of docs/operations.md: config, then enroll with a token file."""
    original = open(CONFIG).read()
    shutil.copy(devserver.ca_file, CA_COPY)
    os.chmod(CA_COPY, 0o644)
    with open(CONFIG, "a") as handle:
        handle.write(f"WEBSOCKET_URL={devserver.ws_url}\nENROLL_CA_FILE={CA_COPY}\nRECONNECT_INTERVAL=0.2\n")
    token_dir = tempfile.mkdtemp(prefix="pulseup-token-")
    token_file = os.path.join(token_dir, "join-token")
    with open(token_file, "w") as handle:
        handle.write(devserver.create_token() + "\n")
    try:
        done = run(["/usr/bin/pulseup-agent", "enroll", "--join-token-file", token_file], check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        yield devserver
    finally:
        shutil.rmtree(token_dir, ignore_errors=True)
        with open(CONFIG, "w") as handle:
            handle.write(original)
        os.unlink(CA_COPY)
        shutil.rmtree("/var/lib/pulseup/certs", ignore_errors=True)
        os.makedirs("/var/lib/pulseup/certs", 0o700)
        shutil.chown("/var/lib/pulseup/certs", "pulseup-worker", "pulseup")


@pytest.fixture
def units(configured, tmp_path):
    started = []

    def start(name):
        unit = UnitProcess(os.path.join(UNITS, name), str(tmp_path / f"{name}.log")).start()
        started.append(unit)
        return unit
    yield start
    for unit in reversed(started):
        unit.stop()


def test_installed_agent_enrolls_and_answers_ping(configured, units):
    devserver = configured
    certs = os.listdir("/var/lib/pulseup/certs")
    assert certs and all(os.stat(os.path.join("/var/lib/pulseup/certs", n)).st_uid != 0 for n in certs)
    supervisor = units("pulseup-supervisor.service")
    assert supervisor.wait_ready(30), supervisor.output()[-3000:]
    worker = units("pulseup-worker.service")
    assert worker.wait_ready(60), worker.output()[-3000:]
    uid = devserver.wait_connected(timeout=60)
    assert uid is not None, worker.output()[-3000:]
    reply = devserver.call(uid, "agent.ping", {"probe": [1, "two"]}, timeout=30)
    assert reply["success"] is True, reply
    assert reply["data"]["echo"] == {"probe": [1, "two"]}
    assert reply["data"]["version"] == installed_version()
    # The worker really runs as pulseup-worker, and the supervisor as root.
    assert os.stat(f"/proc/{worker.proc.pid}").st_uid == pwd.getpwnam("pulseup-worker").pw_uid
    assert os.stat(f"/proc/{supervisor.proc.pid}").st_uid == 0
    # After authenticating, the worker reported to the supervisor over the IPC socket
    # (docs/protocol.md, "Supervisor IPC"): its audit line names the op and the worker's uid.
    assert _eventually(lambda: "worker.status" in supervisor.output()), supervisor.output()[-3000:]
    assert worker.stop() == 0, worker.output()[-3000:]


def _eventually(check, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False
