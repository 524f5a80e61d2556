"""supervisor_main / run_main: roles, READY/STOPPING, the child's IPC, restart through the op."""

import os
import shutil
import signal
import socket as stdsocket
import subprocess
import sys
import time

import gevent
import pytest
from gevent import socket

from agent import exitcodes
from agent.protocol import ipc
from agent.supervisor import main
from tests.supervisor.test_arbiter import FAKE, PYTHON, events, starts, wait_for
from tests.supervisor.test_ipc_server import run_peer


@pytest.fixture
def as_user(monkeypatch):
    monkeypatch.setattr(main.os, "geteuid", lambda: 1000)


def test_supervisor_refuses_non_root(as_user, cfg):
    assert main.supervisor_main(cfg) == exitcodes.NO_PERMISSION


def test_run_as_non_root_runs_the_worker_in_process(as_user, cfg):
    assert main.run_main(cfg, in_process=lambda: 42) == 42
    assert main.run_main(cfg) == exitcodes.NO_PERMISSION


def test_default_worker_argv():
    assert main.default_worker_argv()[1:] == ("-I", "-m", "agent", "worker")
    assert main.default_worker_argv("/etc/x")[1:] == ("-I", "-m", "agent", "--config", "/etc/x", "worker")


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@needs_root
def test_run_with_missing_worker_user_is_config_error(cfg):
    assert main.run_main(cfg.replace(worker_user="no-such-user-pulseup")) == exitcodes.CONFIG


@pytest.fixture
def notify(public_dir, monkeypatch):
    path = os.path.join(public_dir, "notify")
    sock = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    received = []

    def drain():
        while True:
            try:
                received.append(sock.recv(4096).decode())
            except BlockingIOError:
                return received
    yield drain
    sock.close()


@pytest.fixture
def work(public_dir, test_user):
    path = os.path.join(public_dir, "work")
    os.mkdir(path)
    os.chown(path, test_user.pw_uid, test_user.pw_gid)
    shutil.copy(FAKE, os.path.join(public_dir, "fake_worker.py"))
    return path


def call_as_root(path, op, args):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(ipc.encode({"id": "root-1", "op": op, "args": args}))
        header = sock.recv(4)
        return ipc.decode(sock.recv(ipc.body_length(header)))


@needs_root
def test_run_mode_end_to_end_with_a_fake_worker(cfg, test_user, work, notify):
    cfg = cfg.replace(worker_user=test_user.pw_name, worker_group=test_user.pw_name, graceful_timeout=2.0)
    argv = (PYTHON, os.path.join(os.path.dirname(work), "fake_worker.py"), os.path.join(work, "events"),
            "ipc", cfg.supervisor_socket)
    runner = gevent.spawn(main.run_main, cfg, worker_argv=argv, backoff=(0.05, 0.2))
    wait_for(lambda: any(e["event"] == "reply" for e in events(work)))
    reply = next(e["reply"] for e in events(work) if e["event"] == "reply")
    assert reply == {"id": "w1", "ok": True, "result": {}}     # the child, as WORKER_USER, was served
    assert "READY=1\nSTATUS=IPC socket bound" in notify()

    answer = call_as_root(cfg.supervisor_socket, "service.restart", {"unit": "pulseup-worker"})
    assert answer["result"] == {"unit": "pulseup-worker", "via": "supervisor"}
    wait_for(lambda: len(starts(work)) == 2)

    os.kill(os.getpid(), signal.SIGTERM)
    assert runner.get(timeout=20) == exitcodes.OK
    assert "STOPPING=1" in notify()
    assert not os.path.exists(cfg.supervisor_socket)
    assert all(not os.path.exists(f"/proc/{s['pid']}") for s in starts(work))


def start_supervisor_process(cfg, test_user, notify_path):
    """``python -m agent supervisor`` as its own process, the way the packaged unit starts it."""
    env = {"PATH": os.environ["PATH"], "SUPERVISOR_SOCKET": cfg.supervisor_socket, "STATE_DIR": cfg.state_dir,
           "WORKER_USER": test_user.pw_name, "WORKER_GROUP": test_user.pw_name, "NOTIFY_SOCKET": notify_path,
           "LOG_LEVEL": "INFO"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return subprocess.Popen([sys.executable, "-m", "agent", "--config", os.devnull, "supervisor"], cwd=root,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def loaded_libraries(pid):
    with open(f"/proc/{pid}/maps") as maps:
        return {line.split()[-1] for line in maps if "/" in line}


@needs_root
def test_supervisor_process_serves_on_threads_until_sigterm(cfg, test_user, notify, monkeypatch):
    proc = start_supervisor_process(cfg, test_user, os.environ["NOTIFY_SOCKET"])
    try:
        deadline = time.monotonic() + 30
        while "READY=1\nSTATUS=IPC socket bound" not in notify():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        # issue 19: the supervisor role never loads gevent (nor OpenSSL) while idle
        assert not [lib for lib in loaded_libraries(proc.pid) if "gevent" in lib or "libcrypto" in lib]
        assert call_as_root(cfg.supervisor_socket, "worker.status", {"connected": False, "version": "1"})["ok"]
        assert run_peer(cfg.supervisor_socket, user=test_user.pw_name, group=test_user.pw_gid)["reply"]["ok"]
        peers = [gevent.spawn(run_peer, cfg.supervisor_socket, user=test_user.pw_name, group=test_user.pw_gid)
                 for _ in range(4)]
        assert all(p.get(timeout=60)["reply"]["ok"] for p in peers)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == exitcodes.OK, output
    assert "STOPPING=1" in notify() and not os.path.exists(cfg.supervisor_socket)
    assert "signal SIGTERM: stopping" in output


def test_supervisor_imports_no_gevent_crypto_or_openssl():
    # issue 19: what an idle `supervisor` loads; cryptography, hashlib and tempfile load at use
    code = ("import sys; sys.argv = ['pulseup-agent', '--config', '/dev/null', 'supervisor']; import agent.cli, "
            "agent.supervisor.main; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('gevent', 'cryptography', 'hashlib', '_hashlib', 'ssl', 'tempfile', 'greenlet')); print(bad)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
