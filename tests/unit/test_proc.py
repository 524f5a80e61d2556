"""agent/proc.py: the one child-process runner (capped output, minimal environment, process
group stopped on deadline and cancel)."""

import os
import signal
import subprocess
import sys

import gevent
import psutil
import pytest

from agent import proc
from agent.errors import AgentError
from agent.services import commands
from tests.unit.test_docker_fakes import cfg  # noqa: F401 (fixture)


# -- the argv runner ----------------------------------------------------------------

def test_run_capped_caps_output_and_reports_exit_code():
    argv = ["/bin/sh", "-c", "head -c 200000 /dev/zero | tr '\\0' a; echo oops >&2; exit 3"]
    out, err, code = proc.run(argv, {"PATH": "/usr/bin:/bin"}, 30)
    assert len(out) == proc.OUTPUT_CAP and set(out) == {"a"}
    assert err == "oops\n" and code == 3


def test_run_capped_has_no_secrets_in_its_environment(cfg, monkeypatch):
    monkeypatch.setenv("JOIN_TOKEN", "supersecret")
    out, _, _ = proc.run(["/usr/bin/env"], commands.child_env(cfg), 30)
    assert "supersecret" not in out and "PATH=" in out


def test_run_capped_kills_the_process_group_at_the_timeout():
    with pytest.raises(AgentError) as info:
        proc.run(["/bin/sh", "-c", "sleep 30 & sleep 30; wait"], {"PATH": "/usr/bin:/bin"}, 0.3)
    assert info.value.code == "deadline_exceeded"
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "30"]
                and p.ppid() in (os.getpid(), 1)]


def test_run_capped_cancel_terminates_the_group():
    cancels = []
    runner = gevent.spawn(proc.run, ["/bin/sh", "-c", "sleep 30"], {"PATH": "/usr/bin:/bin"}, 60,
                          on_cancel=cancels.append)
    with gevent.Timeout(5):
        while not cancels:
            gevent.sleep(0.01)
    cancels[0]()
    out, err, code = runner.get(timeout=10)
    assert code == -15



def test_stream_hands_over_lines_from_both_pipes_and_the_exit_code():
    lines = []
    code = proc.stream(["/bin/sh", "-c", "echo one; echo two >&2; printf three; exit 4"],
                       {"PATH": "/usr/bin:/bin"}, lambda text, from_stderr: lines.append((text, from_stderr)))
    assert code == 4
    assert sorted(lines) == [("one\n", False), ("three", False), ("two\n", True)]


def test_stream_deadline_stops_the_group():
    with pytest.raises(AgentError) as info:
        proc.stream(["/bin/sh", "-c", "sleep 31 & sleep 31; wait"], {"PATH": "/usr/bin:/bin"},
                    lambda *_: None, timeout=0.3, what="the tool")
    assert info.value.code == "deadline_exceeded" and "the tool" in info.value.message
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "31"]
                and p.ppid() in (os.getpid(), 1)]


def test_stop_kills_a_group_that_ignores_sigterm():
    process = proc.start(["/bin/sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"],
                         {"PATH": "/usr/bin:/bin"})
    assert process.stdout.readline() == b"ready\n"
    proc.stop(process, grace=0.2)
    assert process.poll() == -signal.SIGKILL
    process.stdout.close()
    process.stderr.close()


def test_killing_the_caller_stops_the_child():
    runner = gevent.spawn(proc.run, ["/bin/sh", "-c", "echo $$; sleep 32"], {"PATH": "/usr/bin:/bin"}, 60)
    gevent.sleep(0.3)
    runner.kill(block=True, timeout=15)
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "32"]
                and p.ppid() in (os.getpid(), 1)]


def test_environment_is_built_from_scratch(monkeypatch):
    monkeypatch.setenv("JOIN_TOKEN", "secret")
    monkeypatch.setenv("PATH", "/somewhere/else")
    env = proc.environment(DOCKER_HOST="unix:///x.sock", EMPTY=None)
    assert env["PATH"] == proc.CHILD_PATH and env["DOCKER_HOST"] == "unix:///x.sock"
    assert "JOIN_TOKEN" not in env and "EMPTY" not in env


def test_a_missing_program_raises_file_not_found():
    with pytest.raises(FileNotFoundError):
        proc.run(["/nonexistent/tool"], {"PATH": "/usr/bin:/bin"})
    with pytest.raises(FileNotFoundError):
        proc.stream(["/nonexistent/tool"], {"PATH": "/usr/bin:/bin"}, lambda *_: None)


def test_importing_the_module_loads_no_gevent():
    # the supervisor's seam takes CHILD_PATH from agent.proc and must stay free of gevent (issue 19)
    code = "import sys, agent.proc; print(sorted(m for m in sys.modules if m.split('.')[0] in ('gevent', 'greenlet')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
