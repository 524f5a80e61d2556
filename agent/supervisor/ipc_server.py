"""The supervisor's IPC server: a Unix stream socket speaking the framed protocol (protocol.md 6).

Peers are checked with ``SO_PEERCRED`` before a byte is read: the worker's uid,
or uid 0 from the supervisor's own pid namespace (decisions 14: root inside a
container is refused). Every request, and every refused peer or frame, gets
one audit line (op, peer pid/uid, decision, duration) on the supervisor's log.
"""

import os
import socket
import struct
import time

import gevent
import gevent.event
import gevent.lock
import gevent.pool
from gevent.server import StreamServer

from agent import log
from agent.protocol import ipc

_log = log.get("supervisor.ipc")
_audit = log.get("supervisor.audit")
_CRED = struct.Struct("3i")          # struct ucred {pid_t pid; uid_t uid; gid_t gid;}
BODY_TIMEOUT = 30.0                  # a started frame must arrive within this (slow peers)
MAX_CONNECTIONS = 16
MAX_RUNNING = 32


class Peer:
    def __init__(self, pid, uid, gid):
        self.pid, self.uid, self.gid = pid, uid, gid

    @classmethod
    def of(cls, sock):
        return cls(*_CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)))


def audit(op, peer, decision, started=None, **extra):
    duration = round((time.monotonic() - started) * 1000, 1) if started else 0.0
    _audit.info("ipc %s from pid %s uid %s: %s (%.1f ms)", op, peer.pid, peer.uid, decision, duration,
                extra={"op": op, "peer_pid": peer.pid, "peer_uid": peer.uid, "decision": decision,
                       "duration_ms": duration, **extra})


class IpcServer:
    def __init__(self, cfg, dispatcher, seam, worker_uid=None, group_gid=None):
        self.path = cfg.supervisor_socket
        self.dispatcher, self.seam = dispatcher, seam
        self.worker_uid, self.group_gid = worker_uid, group_gid
        self.running = gevent.pool.Pool(MAX_RUNNING)
        self.server = None

    def start(self):
        """Bind (temporary name, then rename into place) and serve; raises OSError."""
        listener = self._bind()
        self.server = StreamServer(listener, self._handle, spawn=gevent.pool.Pool(MAX_CONNECTIONS))
        self.server.start()
        _log.info("IPC socket bound at %s", self.path)

    def stop(self, timeout=5.0):
        """Stop intake, let running ops finish within timeout, then kill them."""
        if self.server is not None:
            self.server.stop(timeout=1.0)
        self.running.join(timeout=timeout)
        self.running.kill(timeout=1.0)
        try:
            self.seam.unlink(self.path)
        except OSError:
            pass

    def _bind(self):
        directory = os.path.dirname(self.path)
        self.seam.makedirs(directory, 0o750)
        self._own(directory, 0o750)
        temp = f"{self.path}.{os.getpid()}.tmp"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if os.path.lexists(temp):
                self.seam.unlink(temp)
            sock.bind(temp)
            self._own(temp, 0o660)
            sock.listen(64)
            self.seam.rename(temp, self.path)
        except BaseException:
            sock.close()
            raise
        return sock

    def _own(self, path, mode):
        # decisions 14: root:<WORKER_GROUP>; chown only as root and when the group exists
        if self.group_gid is not None and self.seam.geteuid() == 0:
            self.seam.chown(path, 0, self.group_gid)
        self.seam.chmod(path, mode)

    def allowed(self, peer):
        if self.worker_uid is not None and peer.uid == self.worker_uid:
            return True
        return peer.uid == 0 and self._same_pid_namespace(peer.pid)

    def _same_pid_namespace(self, pid):
        try:
            return pid > 0 and self.seam.readlink(f"/proc/{pid}/ns/pid") == self.seam.readlink("/proc/self/ns/pid")
        except OSError:
            return False

    def _handle(self, sock, address):
        peer = Peer.of(sock)
        if not self.allowed(peer):
            audit(None, peer, "refused_peer", peer_gid=peer.gid)
            sock.close()
            return
        conn = _Connection(sock)
        try:
            while self._read_one(conn, peer):
                pass
        finally:
            # StreamServer closes the socket when this handler returns: wait until the
            # replies of requests still running are written (a half-closed peer gets them).
            conn.idle.wait()

    def _read_one(self, conn, peer):
        """Read and dispatch one frame; False when the connection is done."""
        started = time.monotonic()
        try:
            header = conn.recv_exact(4, None)
            if header is None:
                return False
            body = conn.recv_exact(ipc.body_length(header), BODY_TIMEOUT)
            message = ipc.decode(body or b"")
        except ipc.FrameTooLarge as exc:
            conn.send(ipc.error_reply(None, "frame_too_large", str(exc)))
            audit(None, peer, "frame_too_large", started)
            return False
        except (ipc.FrameError, gevent.Timeout, OSError) as exc:
            audit(None, peer, "garbage_frame", started, reason=str(exc)[:200])
            return False
        request, error = ipc.load_request(message)
        if request is None:
            rid = message.get("id") if isinstance(message.get("id"), str) and len(message["id"]) <= ipc.ID_MAX else None
            conn.send(ipc.error_reply(rid, "invalid_argument", error))
            audit(_op_name(message), peer, "invalid_argument", started)
            return True
        conn.started()
        self.running.spawn(self._serve, conn, peer, request, started)
        return True

    def _serve(self, conn, peer, request, started):
        try:
            reply, call = self.dispatcher.handle(request, peer)
            conn.send(reply)
            decision = "ok" if reply["ok"] else reply["error"]["code"]
            audit(request["op"][:128], peer, decision, started, request_id=request["id"])
            for func in (call.after if call is not None else ()):
                _after_reply(func)
        finally:
            conn.done()


def _after_reply(func):
    try:
        func()
    except Exception:  # the reply is out; a failure here is only logged
        _log.exception("post-reply action failed")


def _op_name(message):
    op = message.get("op")
    return op[:128] if isinstance(op, str) else None


class _Connection:
    """One peer's socket: serialised writes, closed once reading stopped and replies are out."""

    def __init__(self, sock):
        self.sock = sock
        self.write_lock = gevent.lock.Semaphore()
        self.pending = 0
        self.idle = gevent.event.Event()
        self.idle.set()

    def recv_exact(self, count, timeout):
        chunks, left = [], count
        with gevent.Timeout(timeout):
            while left:
                chunk = self.sock.recv(min(left, 65536))
                if not chunk:
                    if left == count and count == 4:
                        return None
                    raise ipc.FrameError("connection closed inside a frame")
                chunks.append(chunk)
                left -= len(chunk)
        return b"".join(chunks)

    def send(self, reply):
        try:
            frame = ipc.encode(reply)
        except ipc.FrameTooLarge:
            frame = ipc.encode(ipc.error_reply(reply.get("id"), "failed", "reply too large"))
        with self.write_lock:
            try:
                self.sock.sendall(frame)
            except OSError:
                pass  # the peer left; the op's effect stands and was audited

    def started(self):
        self.pending += 1
        self.idle.clear()

    def done(self):
        self.pending -= 1
        if self.pending == 0:
            self.idle.set()
