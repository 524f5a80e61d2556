"""A hand-written fake of the few Docker API calls the database service makes.

Exec output travels over a real socketpair framed exactly as Docker's attach protocol
(8-byte header: stream, 3 zero bytes, big-endian length), so the service's demultiplexer,
stdin writer and pipeline run for real; only the engine is scripted.
"""
import socket
import struct

import gevent

from agent.services.database import engines
from agent.services.database.target import DatabaseTarget


def frame(stream, data):
    return struct.pack(">BxxxL", stream, len(data)) + data


class FakeExec:
    def __init__(self, script, frames, exit_code, consume_stdin):
        self.script = script
        self.frames = frames
        self.exit_code = exit_code
        self.consume_stdin = consume_stdin
        self.stdin = bytearray()
        self.done = False


class FakeApi:
    """``responder(script) -> (frames, exit_code)``; frames = [(1|2, bytes)]."""

    def __init__(self, responder):
        self.responder = responder
        self.execs = []

    def exec_create(self, container, cmd, stdout=True, stderr=True, stdin=False):
        frames, code = self.responder(cmd[2])
        self.execs.append(FakeExec(cmd[2], frames, code, stdin))
        return {"Id": str(len(self.execs) - 1)}

    def exec_start(self, exec_id, socket=False):
        job = self.execs[int(exec_id)]
        ours, theirs = _socketpair()
        gevent.spawn(self._serve, job, theirs)
        return socket_io(ours)

    def _serve(self, job, sock):
        try:
            if job.consume_stdin:
                while True:
                    data = sock.recv(65536)
                    if not data:
                        break
                    job.stdin += data
            for stream, data in job.frames:
                sock.sendall(frame(stream, data))
        finally:
            job.done = True
            sock.close()

    def exec_inspect(self, exec_id):
        job = self.execs[int(exec_id)]
        return {"Running": not job.done, "ExitCode": job.exit_code if job.done else None}


def _socketpair():
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def socket_io(sock):
    """What docker-py's exec_start(socket=True) returns for a unix socket: a SocketIO."""
    return socket.SocketIO(sock, "rwb")


class FakeAdapter:
    def __init__(self, responder):
        self.api = FakeApi(responder)

    def run(self, container, script, timeout=60.0):
        from agent.services.database.dockerio import DockerAdapter
        return DockerAdapter.run(self, container, script, timeout)


def make_target(engine="postgresql", uid="svc1", running=True, env=None):
    env = env or {"POSTGRES_USER": "admin", "POSTGRES_PASSWORD": "pw-secret-1", "POSTGRES_DB": "app"}
    info = {"Id": "c" * 64, "State": {"Running": running},
            "Config": {"Image": "postgres:16", "Env": [f"{k}={v}" for k, v in env.items()],
                       "Labels": {"pulseup.managed": "true", "pulseup.database_type": engine,
                                  "pulseup.database_name": "app"}}}
    return DatabaseTarget(uid, f"pulseup-db-{uid}", engines.get(engine), info)
