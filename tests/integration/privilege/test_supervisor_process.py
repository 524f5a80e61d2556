"""`pulseup-agent supervisor` as a real process: root only, READY=1 once bound, STOPPING=1, clean exit."""

import os
import signal
import socket

import gevent.subprocess as subprocess

from agent import exitcodes
from agent.protocol import ipc


def test_supervisor_refuses_non_root(worker_user, python, public_dir, config_file):
    done = subprocess.run([python, "-m", "agent", "--config", config_file, "supervisor"],
                          user=worker_user.pw_uid, group=worker_user.pw_gid, extra_groups=[], cwd="/",
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "SUPERVISOR_SOCKET": os.path.join(public_dir, "s.sock")})
    assert done.returncode == exitcodes.NO_PERMISSION, done.stderr
    assert "must run as root" in done.stderr


def test_supervisor_process_lifecycle(worker_user, python, public_dir, config_file):
    notify_path = os.path.join(public_dir, "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(60)
    path = os.path.join(public_dir, "run", "supervisor.sock")
    env = {"PATH": "/usr/bin:/bin", "SUPERVISOR_SOCKET": path, "WORKER_USER": worker_user.pw_name,
           "WORKER_GROUP": worker_user.pw_name, "NOTIFY_SOCKET": notify_path}
    proc = subprocess.Popen([python, "-m", "agent", "--config", config_file, "supervisor"], env=env,
                            cwd="/", stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        assert notify.recv(4096) == b"READY=1\nSTATUS=IPC socket bound"
        assert os.stat(path).st_mode & 0o777 == 0o660
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(path)
            sock.sendall(ipc.encode({"id": "1", "op": "worker.status", "args": {"connected": True, "version": "1"}}))
            header = sock.recv(4)
            assert ipc.decode(sock.recv(ipc.body_length(header))) == {"id": "1", "ok": True, "result": {}}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == exitcodes.OK
        assert notify.recv(4096) == b"STOPPING=1"
        assert not os.path.exists(path)
        assert b"ipc worker.status from pid" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        notify.close()
