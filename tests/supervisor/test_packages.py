"""Package runs with a REAL long-running program behind the real socket (issue 17, item 3).

The fake ``apt-get`` is a shell script that outlives the worker's wait: it must not be
killed, must finish, and its outcome must be readable with ``system.package_status``.
Only at the run's own deadline does it get SIGTERM (its trap proves it was not SIGKILL).
"""

import os
import textwrap
import time

import pytest

from agent.errors import AgentError
from agent.supervisor.dispatch import OpDispatcher
from agent.supervisor.ipc_server import IpcServer
from agent.supervisor.seam import HostSeam
from agent.worker.ipc_client import SupervisorClient

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the IPC socket accepts root or the worker user")

SCRIPT = textwrap.dedent("""\
    #!/bin/sh
    trap 'echo "terminated $1" >> {marks}; kill $child 2>/dev/null; exit 143' TERM
    echo "start $*" >> {marks}
    sleep {seconds} &
    child=$!
    wait $child
    echo "done $1 $DEBIAN_FRONTEND" >> {marks}
    echo "upgraded $1"
""")


class FakeAptSeam(HostSeam):
    """The real host seam, except that ``apt-get`` is found at the test's script."""

    def __init__(self, script):
        self.script = script

    def which(self, name):
        return self.script if name == "apt-get" else None


@pytest.fixture
def apt(tmp_path):
    def make(seconds):
        marks, script = tmp_path / "marks", tmp_path / "apt-get"
        script.write_text(SCRIPT.format(marks=marks, seconds=seconds))
        script.chmod(0o755)
        return str(script), marks
    return make


@pytest.fixture
def serve(host):
    servers, clients = [], []

    def start(script, deadline=None):
        host.seam = FakeAptSeam(script)
        if deadline is not None:
            host.package_deadline = deadline
        server = IpcServer(host.cfg, OpDispatcher(host), host.seam)
        server.start()
        servers.append(server)
        clients.append(SupervisorClient(host.cfg.supervisor_socket))
        return clients[-1]
    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.stop(timeout=30)


def wait_finished(client, seconds=60.0):
    deadline = time.monotonic() + seconds
    while True:
        status = client.call("system.package_status", timeout=10)
        if not status["running"]:
            return status["run"]
        assert time.monotonic() < deadline, "the package run did not finish"
        time.sleep(0.1)


def test_a_run_that_outlives_the_wait_finishes_and_is_queryable(apt, serve):
    script, marks = apt(seconds=6)
    client = serve(script)
    with pytest.raises(AgentError) as caught:
        client.call("system.update_packages", timeout=1.0)
    # the supervisor's answer ("still running") or, on a loaded host, the client's own wait
    assert caught.value.code == "deadline_exceeded"
    now = client.call("system.package_status", timeout=10)
    assert now["running"] and now["run"]["state"] == "running"
    assert os.path.exists(f"/proc/{now['run']['pid']}")         # still alive after the wait ended
    run = wait_finished(client)
    assert run["state"] == "succeeded" and run["exit_code"] == 0 and run["run_id"] == now["run"]["run_id"]
    assert "upgraded -q" in run["output"]
    lines = marks.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["start", "done", "start", "done"]
    assert "done -q noninteractive" in lines and not any("terminated" in line for line in lines)


def test_only_the_run_deadline_stops_it_and_with_sigterm(apt, serve):
    script, marks = apt(seconds=120)
    client = serve(script, deadline=1.0)
    started = time.monotonic()
    with pytest.raises(AgentError) as caught:
        client.call("system.update_packages", timeout=60.0)
    assert caught.value.code == "deadline_exceeded" and "SIGTERM" in caught.value.message
    assert time.monotonic() - started < 50
    run = client.call("system.package_status", timeout=10)["run"]
    assert run["state"] == "terminated" and run["exit_code"] == 143       # the trap ran: not SIGKILL
    assert marks.read_text().splitlines() == ["start -q update", "terminated -q"]
