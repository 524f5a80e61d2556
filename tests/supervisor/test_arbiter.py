"""The arbiter with a fake worker really running as the unprivileged test user."""

import grp
import json
import os
import shutil
import signal
import time

import gevent
import pytest

from agent import exitcodes
from agent.supervisor.arbiter import Arbiter, WorkerSpec
from agent.supervisor.seam import HostSeam

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="spawning as another user needs root")
FAKE = os.path.join(os.path.dirname(__file__), "fake_worker.py")
PYTHON = "/usr/bin/python3"   # /root/.pyenv's interpreter is not executable by other users


@pytest.fixture
def work(public_dir, test_user):
    """A directory the test user writes its event log into, holding a copy of the fake worker."""
    path = os.path.join(public_dir, "work")
    os.mkdir(path)
    os.chown(path, test_user.pw_uid, test_user.pw_gid)
    shutil.copy(FAKE, os.path.join(public_dir, "fake_worker.py"))
    return path


def events(work):
    path = os.path.join(work, "events")
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def starts(work):
    return [e for e in events(work) if e["event"] == "start"]


def docker_gid():
    try:
        return grp.getgrnam("docker").gr_gid
    except KeyError:
        return None


def make(work, test_user, *mode, **options):
    script = os.path.join(os.path.dirname(work), "fake_worker.py")
    extra = tuple(g for g in (docker_gid(),) if g is not None)
    spec = WorkerSpec((PYTHON, script, os.path.join(work, "events"), *mode), test_user.pw_uid, test_user.pw_gid,
                      extra, {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})
    options.setdefault("backoff", (0.05, 0.2))
    return Arbiter(HostSeam(), spec, options.pop("graceful_timeout", 2.0), **options)


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        gevent.sleep(0.05)


def test_child_runs_unprivileged_and_stops_gracefully(work, test_user):
    arbiter = make(work, test_user, "sleep")
    runner = gevent.spawn(arbiter.run)
    wait_for(lambda: starts(work))
    start = starts(work)[0]
    assert start["Uid"] == [test_user.pw_uid] * 4 and start["Gid"] == [test_user.pw_gid] * 4
    assert start["Groups"] == [g for g in (docker_gid(),) if g is not None]  # no root groups (gh-94632)
    assert start["umask"] == 0o027 and start["cwd"] == "/"
    arbiter.record_signal(signal.SIGTERM)
    assert runner.get(timeout=15) == exitcodes.OK
    assert [e["event"] for e in events(work)] == ["start", "term"]
    assert not os.path.exists(f"/proc/{start['pid']}")


def test_real_sigterm_is_forwarded(work, test_user):
    arbiter = make(work, test_user, "sleep")
    runner = gevent.spawn(arbiter.run)
    wait_for(lambda: starts(work))
    os.kill(os.getpid(), signal.SIGTERM)   # the handler only records; the loop stops the child
    assert runner.get(timeout=15) == exitcodes.OK
    assert events(work)[-1]["event"] == "term"


def test_boot_failures_stop_with_backoff(work, test_user):
    arbiter = make(work, test_user, "exit", "1", boot_window=10.0, boot_failures=3, backoff=(0.2, 10.0))
    assert gevent.spawn(arbiter.run).get(timeout=30) == exitcodes.BOOT_FAILURE
    times = [e["t"] for e in starts(work)]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.2 and times[2] - times[1] >= 0.4   # doubled


def test_long_lived_crashes_keep_restarting(work, test_user):
    arbiter = make(work, test_user, "sleep-exit", "0.4", boot_window=0.2, boot_failures=2)
    runner = gevent.spawn(arbiter.run)
    wait_for(lambda: len(starts(work)) >= 3)
    assert not runner.ready()
    arbiter.record_signal(signal.SIGINT)
    assert runner.get(timeout=15) == exitcodes.OK


@pytest.mark.parametrize("code", sorted(exitcodes.NO_RESTART))
def test_no_restart_codes_end_the_arbiter(work, test_user, code):
    arbiter = make(work, test_user, "exit", str(code))
    assert gevent.spawn(arbiter.run).get(timeout=15) == code
    gevent.sleep(0.3)
    assert len(starts(work)) == 1


def test_stop_kills_a_worker_ignoring_term(work, test_user):
    arbiter = make(work, test_user, "ignore-term", graceful_timeout=0.3, stop_margin=0.2)
    runner = gevent.spawn(arbiter.run)
    wait_for(lambda: starts(work))
    began = time.monotonic()
    arbiter.record_signal(signal.SIGTERM)
    assert runner.get(timeout=15) == exitcodes.OK
    assert time.monotonic() - began >= 0.5
    assert "term-ignored" in [e["event"] for e in events(work)]
    assert not os.path.exists(f"/proc/{starts(work)[0]['pid']}")


def test_restart_worker_replaces_the_child(work, test_user):
    arbiter = make(work, test_user, "sleep")
    runner = gevent.spawn(arbiter.run)
    wait_for(lambda: starts(work))
    arbiter.restart_worker()
    wait_for(lambda: len(starts(work)) == 2)
    first, second = starts(work)
    assert first["pid"] != second["pid"] and not os.path.exists(f"/proc/{first['pid']}")
    arbiter.record_signal(signal.SIGTERM)
    assert runner.get(timeout=15) == exitcodes.OK
    assert arbiter.quick_failures == 0


def test_unstartable_worker_is_a_boot_failure(work, test_user):
    arbiter = make(work, test_user, boot_failures=2)
    arbiter.spec = WorkerSpec(("/nonexistent/python",), test_user.pw_uid, test_user.pw_gid)
    assert gevent.spawn(arbiter.run).get(timeout=15) == exitcodes.BOOT_FAILURE
