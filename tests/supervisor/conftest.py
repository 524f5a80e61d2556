import os
import pwd
import shutil
import subprocess
import tempfile

import pytest

from agent import config
from agent.supervisor.dispatch import OpDispatcher
from agent.supervisor.ops import Host, Roots
from tests.supervisor.fakes import RecordingSeam

TEST_USER = "pulseup-test-worker"


@pytest.fixture(scope="session")
def test_user():
    """A real unprivileged account (created once; useradd --system, no home)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create and switch to a test user")
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
                       check=True)
        return pwd.getpwnam(TEST_USER)


@pytest.fixture
def roots(tmp_path):
    logs = tmp_path / "log"
    (logs / "pulseup").mkdir(parents=True)
    (tmp_path / "tmp").mkdir()
    return Roots(logs=str(logs), logs_excluded=str(logs / "pulseup"), temp=str(tmp_path / "tmp"),
                 uninstall_flag=str(tmp_path / "run" / "pulseup-agent" / "delete-needed"),
                 uninstall_argv=("/usr/lib/pulseup-agent/uninstall",))


@pytest.fixture
def seam():
    return RecordingSeam()


@pytest.fixture
def public_dir():
    """A 0755 directory other users can traverse (pytest's tmp_path is below a 0700 one)."""
    path = tempfile.mkdtemp(prefix="pulseup-test-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def cfg(tmp_path, public_dir):
    return config.defaults().replace(state_dir=str(tmp_path / "state"),
                                     supervisor_socket=os.path.join(public_dir, "run", "supervisor.sock"))


@pytest.fixture
def host(cfg, seam, roots):
    return Host(cfg, seam, roots)


@pytest.fixture
def dispatcher(host):
    return OpDispatcher(host)


def request(op, args=None, rid="r1", timeout=None):
    return {"id": rid, "op": op, "args": args or {}, "timeout": timeout}
