"""The supervisor's IPC server: a Unix stream socket speaking the framed protocol (docs/protocol.md, "Supervisor IPC").

Peers are checked with ``SO_PEERCRED`` before a byte is read: the worker's uid,
or uid 0 from the supervisor's own pid namespace (docs/protocol.md, "Supervisor IPC": root inside a
container is refused). Every request, and every refused peer or frame, gets
one audit line (op, peer pid/uid, decision, duration) on the supervisor's log.

Plain threads and sockets, no gevent: the ``supervisor`` role serves a handful
of requests a day and idles the rest, and gevent alone would double its memory
(issue 19; bench/footprint.py). Under gevent's patches (``run`` mode, tests) the
same code runs on greenlets. The server owns every thread it starts: one
acceptor, one reader per connection (at most MAX_CONNECTIONS), one per running
request (at most MAX_RUNNING).
"""

import os
import select
import socket
import struct
import threading
import time

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
        self.running = _Threads(MAX_RUNNING)
        self.readers = _Threads(MAX_CONNECTIONS)
        self.connections = set()
        self.listener = None
        self.acceptor = None

    def start(self):
        """Bind (temporary name, then rename into place) and serve; raises OSError."""
        self.listener = self._bind()
        self.acceptor = threading.Thread(target=self._accept_loop, args=(self.listener,), name="ipc-accept",
                                         daemon=True)
        self.acceptor.start()
        _log.info("IPC socket bound at %s", self.path)

    def stop(self, timeout=5.0):
        """Stop intake, let running ops finish within timeout, then close every connection.

        Threads cannot be killed: a request still running after timeout is left to end
        on its own (its reply goes nowhere); the process may exit under it.
        """
        listener, self.listener = self.listener, None
        if listener is not None:
            _shutdown(listener)
            listener.close()
            self.acceptor.join(timeout=1.0)
        if not self.running.join(timeout):
            _log.warning("%d IPC requests still running after %g s", self.running.count, timeout)
        for conn in list(self.connections):
            _shutdown(conn.sock)
        self.readers.join(1.0)
        try:
            self.seam.unlink(self.path)
        except OSError:
            pass

    def _accept_loop(self, listener):
        while self.listener is listener:
            self.readers.reserve()
            try:
                sock, _ = listener.accept()
            except OSError:
                self.readers.unreserve()
                if self.listener is listener:
                    _log.exception("IPC accept failed")
                    time.sleep(0.1)
                continue
            self.readers.start(f"ipc-conn-{sock.fileno()}", self._handle, sock)

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
        # docs/protocol.md, "Supervisor IPC": root:<WORKER_GROUP>; chown only as root and when the group exists
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

    def _handle(self, sock):
        try:
            peer = Peer.of(sock)
            if not self.allowed(peer):
                audit(None, peer, "refused_peer", peer_gid=peer.gid)
                return
            conn = _Connection(sock)
            self.connections.add(conn)
            try:
                while self._read_one(conn, peer):
                    pass
            finally:
                # wait until the replies of requests still running are written (a half-closed peer gets them)
                conn.idle.wait()
                self.connections.discard(conn)
        finally:
            sock.close()

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
        except (ipc.FrameError, OSError) as exc:      # TimeoutError is an OSError
            audit(None, peer, "garbage_frame", started, reason=str(exc)[:200])
            return False
        request, error = ipc.load_request(message)
        if request is None:
            rid = message.get("id") if isinstance(message.get("id"), str) and len(message["id"]) <= ipc.ID_MAX else None
            conn.send(ipc.error_reply(rid, "invalid_argument", error))
            audit(_op_name(message), peer, "invalid_argument", started)
            return True
        conn.started()
        self.running.reserve()
        self.running.start(f"ipc-op-{request['id'][:16]}", self._serve, conn, peer, request, started)
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
        self.write_lock = threading.Lock()
        self.count_lock = threading.Lock()
        self.pending = 0
        self.idle = threading.Event()
        self.idle.set()

    def recv_exact(self, count, timeout):
        """count bytes within timeout seconds (None: no limit); raises TimeoutError, FrameError."""
        chunks, left = [], count
        deadline = None if timeout is None else time.monotonic() + timeout
        while left:
            if deadline is not None and not _readable(self.sock, deadline - time.monotonic()):
                raise TimeoutError(f"frame not complete within {timeout:g} s")
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
        with self.count_lock:
            self.pending += 1
            self.idle.clear()

    def done(self):
        with self.count_lock:
            self.pending -= 1
            if self.pending == 0:
                self.idle.set()


class _Threads:
    """A bounded set of daemon threads: reserve a slot (blocks when full), start, join all."""

    def __init__(self, limit):
        self.slots = threading.BoundedSemaphore(limit)
        self.changed = threading.Condition()
        self.count = 0

    def reserve(self):
        self.slots.acquire()

    def unreserve(self):
        self.slots.release()

    def start(self, name, func, *args):
        with self.changed:
            self.count += 1
        try:
            threading.Thread(target=self._run, args=(func, args), name=name, daemon=True).start()
        except RuntimeError:  # cannot start a thread: the slot is given back, the work dropped
            _log.exception("cannot start %s", name)
            self._finished()

    def join(self, timeout):
        """True when every thread ended within timeout."""
        with self.changed:
            return self.changed.wait_for(lambda: self.count == 0, timeout)

    def _run(self, func, args):
        try:
            func(*args)
        except Exception:  # the thread's owner logs; the server goes on
            _log.exception("IPC thread failed")
        finally:
            self._finished()

    def _finished(self):
        with self.changed:
            self.count -= 1
            self.changed.notify_all()
        self.slots.release()


def _readable(sock, seconds):
    # select, not settimeout: a socket timeout would also bound the op threads' sendall
    return bool(select.select([sock], [], [], max(0.0, seconds))[0])


def _shutdown(sock):
    # wakes a thread blocked in accept()/recv() on it (close() alone does not, on Linux)
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
