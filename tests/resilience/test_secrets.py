"""Secrets: a real worker process enrolls with a join token from its environment (never from a
command-line value: docs/protocol.md, "Enrollment and certificates") and runs; the token must
appear in no log line (its own, at DEBUG, and the devserver's), no file under STATE_DIR /
CERT_DIR / AGENT_LOG_DIR or the devserver's data directory (tokens are stored as SHA-256:
docs/devserver.md, "Data directory (mode 0700)"), and no /proc/<pid>/cmdline while it runs. A
refused, equally distinctive token is checked too."""

import logging
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import gevent
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CANARY = "pulseup-canary-Zq8xW3vK9mLr2TfY"          # a refused token: no server knows it


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


@pytest.fixture
def devserver_lines():
    handler, logger = Lines(), logging.getLogger("agent.devserver")
    old = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(old)


@pytest.fixture
def home():
    """A directory the worker's user owns (pytest's tmp_path is below a 0700 directory)."""
    path = tempfile.mkdtemp(prefix="pulseup-secrets-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def worker_user():
    """As root the worker must drop privileges (it refuses root): run it as nobody."""
    return pwd.getpwnam("nobody") if os.geteuid() == 0 else None


def start_worker(devserver, home, token, user):
    for name in ("state", "certs", "logs"):
        os.makedirs(os.path.join(home, name), exist_ok=True)
        if user is not None:
            os.chown(os.path.join(home, name), user.pw_uid, user.pw_gid)
    ca_file = shutil.copy(devserver.ca_file, os.path.join(home, "server-ca.crt"))
    os.chmod(ca_file, 0o644)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ROOT, "JOIN_TOKEN": token, "LOG_LEVEL": "DEBUG",
           "WEBSOCKET_URL": devserver.ws_url, "ENROLL_CA_FILE": ca_file, "STATE_DIR": f"{home}/state",
           "CERT_DIR": f"{home}/certs", "AGENT_LOG_DIR": f"{home}/logs", "RECONNECT_INTERVAL": "0.2",
           "SUPERVISOR_SOCKET": f"{home}/supervisor.sock"}
    options = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
    return subprocess.Popen([sys.executable, "-m", "agent", "--config", os.devnull, "worker"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **options)


def cmdlines_holding(secret):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if secret.encode() in handle.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def files_holding(secret, *roots):
    found = []
    for root in roots:
        for directory, _, names in os.walk(root):
            for name in names:
                with open(os.path.join(directory, name), "rb") as handle:
                    if secret.encode() in handle.read():
                        found.append(os.path.join(directory, name))
    return found


def watch_cmdlines(secret, seen):
    while True:
        seen.extend(cmdlines_holding(secret))
        gevent.sleep(0.05)


def test_join_token_leaks_nowhere(devserver, home, devserver_lines):
    user = worker_user()
    token = devserver.create_token()
    seen = []
    watcher = gevent.spawn(watch_cmdlines, token, seen)
    refused = start_worker(devserver, home, CANARY, user)
    refused_out = refused.communicate(timeout=60)[0].decode()
    assert refused.returncode != 0 and "Invalid or used token" in refused_out
    worker = start_worker(devserver, home, token, user)
    try:
        uid = devserver.wait_connected(timeout=30)
        assert uid is not None, "the worker did not connect"
        assert devserver.call(uid, "agent.ping", {"secret": "no"}, timeout=10)["success"]
        # controls: the scanners look at the right process and files
        with open(f"/proc/{worker.pid}/environ", "rb") as handle:
            assert token.encode() in handle.read()
        assert os.path.exists(os.path.join(home, "certs", "agent.crt"))
        old = devserver.hub.known(uid).conn
        devserver.drop_connection(uid)          # reconnect and re-authenticate: more logging
        with gevent.Timeout(20):
            while devserver.hub.known(uid).conn in (None, old):
                gevent.sleep(0.05)
        assert devserver.call(uid, "agent.hardware.info", {}, timeout=30) is not None
    finally:
        watcher.kill()
        worker.terminate()
        out = worker.communicate(timeout=60)[0].decode()
    assert "authenticated as" in out, out[-2000:]
    for secret in (token, CANARY):
        assert secret not in out and secret not in refused_out
        assert not [line for line in devserver_lines if secret in line]
        assert files_holding(secret, home, devserver.data_dir) == []
    assert seen == [] and cmdlines_holding(token) == []
