"""The one way the worker runs a program (docs/design.md, "Habits").

Every child gets an argument list (never a shell), a minimal environment built by
:func:`environment` (never the worker's own: it holds tokens and passwords), its own process
group (``start_new_session``), and is stopped as a group: SIGTERM, then SIGKILL after a grace
(docs/security.md, "Child processes"). :func:`run` collects
capped output; :func:`stream` hands over each output line as it comes.

Both block the calling greenlet only: the worker runs under gevent's monkey patching, so
``subprocess`` waits cooperatively. If the caller's greenlet is killed (a cancelled or expired
operation), the ``finally`` stops the group before the exception goes on.

The supervisor does not run programs with this module: it runs its few programs through its
syscall seam (``agent/supervisor/seam.py``), which takes :data:`CHILD_PATH` from here. gevent is
imported at first use, so that import loads no gevent into the supervisor.
"""

import os
import signal
import subprocess
from typing import NamedTuple

from agent.errors import AgentError

CHILD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OUTPUT_CAP = 60 * 1024
KILL_GRACE = 10.0      # SIGTERM, then SIGKILL after this many seconds
KILL_WAIT = 5.0        # how long to wait for the group after SIGKILL
_CHUNK = 8192


class Result(NamedTuple):
    stdout: str
    stderr: str
    exit_code: int


def environment(**extra):
    """PATH, LANG, HOME and the given values (those that are not None): nothing inherited
    from the worker but HOME."""
    env = {"PATH": CHILD_PATH, "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/")}
    env.update({key: value for key, value in extra.items() if value is not None})
    return env


def start(argv, env, cwd=None):
    """``Popen`` of ``argv`` in a new session (its own process group), stdin from /dev/null,
    stdout and stderr piped. Raises FileNotFoundError/PermissionError for a missing program."""
    return subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def signal_group(process, signum):
    """Send ``signum`` to the process group of ``process``; quiet if it is gone."""
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def stop(process, grace=KILL_GRACE):
    """SIGTERM the group, SIGKILL it after ``grace`` seconds; no-op once the leader exited."""
    if process.poll() is not None:
        return
    signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        signal_group(process, signal.SIGKILL)
    try:
        process.wait(timeout=KILL_WAIT)
    except subprocess.TimeoutExpired:
        pass


def run(argv, env, timeout=None, cwd=None, max_output=OUTPUT_CAP, on_cancel=None, what=None,
        grace=KILL_GRACE):
    """Run ``argv`` to its end: a :class:`Result` with stdout and stderr decoded (UTF-8,
    errors replaced), each cut to its first ``max_output`` bytes (None: no cap).
    ``on_cancel(callback)`` registers a callback that SIGTERMs the group. Raises
    deadline_exceeded after ``timeout`` seconds (the group is stopped)."""
    process = start(argv, env, cwd)
    if on_cancel is not None:
        on_cancel(lambda: signal_group(process, signal.SIGTERM))
    readers = _group()
    try:
        out = readers.spawn(_read_capped, process.stdout, max_output)
        err = readers.spawn(_read_capped, process.stderr, max_output)
        code = _wait(process, timeout, what or os.path.basename(argv[0]))
        readers.join()
        return Result(out.get(), err.get(), code)
    finally:
        _finish(process, readers, grace)


def stream(argv, env, on_line, cwd=None, timeout=None, on_cancel=None, what=None, grace=KILL_GRACE):
    """Run ``argv`` to its end, calling ``on_line(text, from_stderr)`` for every output line
    (decoded, with its newline); returns the exit code. Cancellation and deadline as :func:`run`."""
    process = start(argv, env, cwd)
    if on_cancel is not None:
        on_cancel(lambda: signal_group(process, signal.SIGTERM))
    readers = _group()
    try:
        readers.spawn(_pump, process.stdout, on_line, False)
        readers.spawn(_pump, process.stderr, on_line, True)
        code = _wait(process, timeout, what or os.path.basename(argv[0]))
        readers.join()
        return code
    finally:
        _finish(process, readers, grace)


def _group():
    import gevent.pool     # at use: the supervisor imports this module for CHILD_PATH only
    return gevent.pool.Group()


def _wait(process, timeout, what):
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AgentError("deadline_exceeded", f"{what} did not finish in {timeout:g} s") from None


def _finish(process, readers, grace):
    if process.poll() is None:
        stop(process, grace)
    readers.kill()
    process.stdout.close()
    process.stderr.close()


def _read_capped(pipe, limit):
    kept, size = [], 0
    while True:
        chunk = pipe.read1(_CHUNK)
        if not chunk:
            break
        if limit is None or size < limit:
            kept.append(chunk if limit is None else chunk[:limit - size])
            size += len(kept[-1])
    return b"".join(kept).decode("utf-8", errors="replace")


def _pump(pipe, on_line, from_stderr):
    for raw in iter(pipe.readline, b""):
        on_line(raw.decode("utf-8", "replace"), from_stderr)
