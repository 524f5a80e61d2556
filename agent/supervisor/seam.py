"""The supervisor's one syscall seam (supervisor's ``ServerOptions``; docs/design.md, "Habits").

Every action of the supervisor that touches the host goes through a
:class:`HostSeam`: running a program, signalling, file system changes, user
look-ups. Each method is one to three lines so that it needs no test of its
own, and tests swap in a subclass that records the exact argv instead of
rebooting the machine (docs/design.md, "Testing privileged operations").
"""

import contextlib
import grp
import os
import pwd
import signal
import subprocess  # cooperative under gevent's patches (`run` mode), plain threads otherwise
from dataclasses import dataclass

from agent.proc import CHILD_PATH   # the one child PATH; that import loads no gevent

# docs/protocol.md, "Enrollment and certificates": children get a minimal environment, never the agent's secrets.
BASE_ENV = {"PATH": CHILD_PATH, "LANG": "C.UTF-8"}
TAIL_BYTES = 4096

_libc = None   # ctypes and shutil load at first use: an idle supervisor does without (issue 19)


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    stdout_tail: str
    stderr_tail: str


def _tail(data):
    return data[-TAIL_BYTES:].decode("utf-8", "replace")


class HostSeam:
    """The real host. Methods raise what the underlying call raises (OSError, KeyError...)."""

    # --- programs -------------------------------------------------------
    def run(self, argv, timeout=None, env=None):
        """Run argv (never a shell) to completion; raises subprocess.TimeoutExpired, OSError."""
        done = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, env={**BASE_ENV, **(env or {})}, close_fds=True)
        return RunResult(done.returncode, _tail(done.stdout), _tail(done.stderr))

    def start(self, argv, env=None, stdout=None, stderr=None):
        """Start argv (never a shell) in its own session, output to the given files; the Popen."""
        return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                env={**BASE_ENV, **(env or {})}, close_fds=True, start_new_session=True)

    def terminate(self, proc):
        """SIGTERM to a started program unless it already ended (Popen.send_signal checks)."""
        proc.send_signal(signal.SIGTERM)

    def spawn_detached(self, argv):
        """Start argv in its own session, not waited for (the packaged uninstall)."""
        return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=dict(BASE_ENV), start_new_session=True).pid

    def popen(self, argv, **kwargs):
        return subprocess.Popen(list(argv), **kwargs)

    def which(self, name):
        import shutil
        return shutil.which(name, path=BASE_ENV["PATH"])

    def kill(self, pid, signum):
        os.kill(pid, signum)

    # --- users ----------------------------------------------------------
    def getpwnam(self, name):
        return pwd.getpwnam(name)

    def getgrnam(self, name):
        return grp.getgrnam(name)

    def geteuid(self):
        return os.geteuid()

    @contextlib.contextmanager
    def fs_user(self, uid, gid):
        """File system access checks as uid:gid (setfsuid(2)); only file calls inside, no yields."""
        _set_fs_ids(uid, gid)
        try:
            yield
        finally:
            _set_fs_ids(os.geteuid(), os.getegid())

    # --- files ----------------------------------------------------------
    def makedirs(self, path, mode):
        os.makedirs(path, mode=mode, exist_ok=True)

    def chown(self, path, uid, gid):
        os.chown(path, uid, gid, follow_symlinks=False)

    def chmod(self, path, mode):
        os.chmod(path, mode)

    def rename(self, src, dst, dir_fd=None):
        os.rename(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    def unlink(self, path, dir_fd=None):
        os.unlink(path, dir_fd=dir_fd)

    def open(self, path, flags, mode=0o600, dir_fd=None):
        return os.open(path, flags | os.O_CLOEXEC, mode, dir_fd=dir_fd)

    def mkdir(self, path, mode, dir_fd=None):
        os.mkdir(path, mode, dir_fd=dir_fd)

    def fchmod(self, fd, mode):
        os.fchmod(fd, mode)

    def lstat(self, path, dir_fd=None):
        return os.stat(path, dir_fd=dir_fd, follow_symlinks=False)

    def fwalk(self, root):
        """os.fwalk without following symlinks: dir fds defeat symlink swaps (races in /tmp)."""
        return os.fwalk(root, follow_symlinks=False)

    def readlink(self, path):
        return os.readlink(path)

    def mkdtemp(self, prefix, directory):
        import tempfile   # at use: an idle supervisor does without (issue 19)
        return tempfile.mkdtemp(prefix=prefix, dir=directory)

    def rmtree(self, path):
        import shutil
        shutil.rmtree(path, ignore_errors=True)

    def copy(self, src, dst):
        """Copy a file with its mode bits (shutil.copy); the new path."""
        import shutil
        return shutil.copy(src, dst)

    def copyfile(self, src, dst):
        """Copy a file's bytes only (shutil.copyfile)."""
        import shutil
        shutil.copyfile(src, dst)

    def under_systemd(self):
        """True when systemd is the init system (sd_booted(3))."""
        return os.path.isdir("/run/systemd/system")


def _set_fs_ids(uid, gid):
    # setfsgid first while the fs uid is still privileged; both return the
    # previous value and never fail loudly, so the result is read back (-1 is
    # an invalid id that only queries).
    libc = _load_libc()
    libc.setfsgid(gid)
    libc.setfsuid(uid)
    if libc.setfsuid(-1) != uid or libc.setfsgid(-1) != gid:
        raise PermissionError(f"cannot act as uid {uid} gid {gid}")


def _load_libc():
    global _libc
    if _libc is None:
        import ctypes
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc
