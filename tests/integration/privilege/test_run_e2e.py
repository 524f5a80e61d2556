"""`pulseup-agent run` as root against the devserver: the worker child is unprivileged, reports
to the supervisor, is restarted after SIGKILL and is stopped with the supervisor (docs/protocol.md,
"Supervisor IPC", roles)."""

import json
import os
import shutil
import signal
import time

import gevent
import gevent.subprocess as subprocess
import psutil
import pytest

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent import exitcodes


def owned_dir(path, user):
    os.makedirs(path, mode=0o700)
    os.chown(path, user.pw_uid, user.pw_gid)
    return path


@pytest.fixture
def agent_env(public_dir, devserver, worker_user, ssh_user):
    ca = os.path.join(public_dir, "ca.crt")
    shutil.copy(devserver.ca_file, ca)
    os.chmod(ca, 0o644)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "WEBSOCKET_URL": devserver.ws_url,
        "JOIN_TOKEN": devserver.create_token(),
        "ENROLL_CA_FILE": ca,
        "STATE_DIR": owned_dir(os.path.join(public_dir, "state"), worker_user),
        "CERT_DIR": owned_dir(os.path.join(public_dir, "certs"), worker_user),
        "AGENT_LOG_DIR": owned_dir(os.path.join(public_dir, "logs"), worker_user),
        "SUPERVISOR_SOCKET": os.path.join(public_dir, "run", "supervisor.sock"),
        "WORKER_USER": worker_user.pw_name,
        "WORKER_GROUP": worker_user.pw_name,
        "RECONNECT_INTERVAL": "0.2",
        "RECONNECT_BACKOFF_MAX": "1",
        "GRACEFUL_TIMEOUT": "3",
        "LOG_FORMAT": "json",
        "PULSEUP_SSH_USERS": ssh_user.pw_name,
    }
    return env


def worker_children(pid):
    return [child for child in psutil.Process(pid).children() if child.is_running()]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        gevent.sleep(0.1)


def audit_lines(stderr_path):
    lines = []
    with open(stderr_path) as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("component") == "supervisor.audit":
                lines.append(record)
    return lines


def check_ssh_key_add(devserver, uid, ssh_user):
    key = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    reply = devserver.call(uid, "server.ssh_key.add", {"user": ssh_user.pw_name, "public_key": key}, timeout=20)
    assert reply["success"] is True, reply
    assert reply["data"]["added"] is True and reply["data"]["fingerprint"].startswith("SHA256:")
    path = os.path.join(ssh_user.pw_dir, ".ssh", "authorized_keys")
    info = os.stat(path)
    assert (info.st_uid, info.st_mode & 0o777) == (ssh_user.pw_uid, 0o600)
    with open(path) as handle:
        assert handle.read() == key + "\n"
    again = devserver.call(uid, "server.ssh_key.add", {"user": ssh_user.pw_name, "public_key": key}, timeout=20)
    assert again["data"]["added"] is False


def test_run_end_to_end(devserver, agent_env, worker_user, ssh_user, python, public_dir, config_file):
    stderr_path = os.path.join(public_dir, "run.log")
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen([python, "-m", "agent", "--config", config_file, "run"], env=agent_env,
                                stderr=stderr, stdout=subprocess.DEVNULL, cwd="/")
    try:
        def connected():
            assert proc.poll() is None, f"run exited with {proc.returncode}"
            return [a["server_uid"] for a in devserver.agents() if a["connected"]]
        uid = wait_for(connected, 60, "the first connection")[0]
        first_auth = devserver.agents()[0]["authenticated_at"]
        (worker,) = wait_for(lambda: worker_children(proc.pid), 10, "the worker child")
        assert worker.uids().real == worker_user.pw_uid and worker.uids().effective == worker_user.pw_uid
        assert worker.cmdline()[-3:] == ["--config", config_file, "worker"]   # passed through
        assert 0 not in worker.gids() and 0 not in os.getgrouplist(worker_user.pw_name, worker_user.pw_gid)
        wait_for(lambda: [r for r in audit_lines(stderr_path)
                          if r["op"] == "worker.status" and r["decision"] == "ok"
                          and r["peer_uid"] == worker_user.pw_uid], 15, "worker.status on the IPC")
        assert devserver.call(uid, "agent.ping", {"n": 1}, timeout=10)["success"] is True

        # a privileged command through the whole chain: devserver -> worker -> IPC -> supervisor
        check_ssh_key_add(devserver, uid, ssh_user)

        worker.kill()
        started = time.monotonic()
        wait_for(lambda: any(a["connected"] and a["authenticated_at"] != first_auth for a in devserver.agents()),
                 15, "reconnection after SIGKILL of the worker")
        assert time.monotonic() - started < 15
        (replacement,) = worker_children(proc.pid)
        assert replacement.pid != worker.pid
        assert devserver.call(uid, "agent.ping", {"n": 2}, timeout=10)["success"] is True

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == exitcodes.OK
        assert not psutil.pid_exists(replacement.pid) or replacement.status() == psutil.STATUS_ZOMBIE
        assert not os.path.exists(agent_env["SUPERVISOR_SOCKET"])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.returncode != exitcodes.OK:
            with open(stderr_path) as handle:
                print(handle.read()[-8000:])
