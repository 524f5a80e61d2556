"""Fixtures for the privilege-separation tests: root, a test worker user, public directories."""

import os
import pwd
import shutil
import subprocess
import tempfile

import pytest

from harness.require import unavailable

TEST_USER = "pulseup-test-worker"
# The worker child must be able to execute the interpreter: not /root/.pyenv's (docs/hosts.md, "The test machines").
VENV_PYTHON = os.path.join(os.path.dirname(__file__), "..", "..", "..", ".venv", "bin", "python")


@pytest.fixture(scope="session")
def worker_user():
    if os.geteuid() != 0:
        unavailable("privilege separation tests need root")
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
                       check=True)
        return pwd.getpwnam(TEST_USER)


@pytest.fixture
def public_dir():
    path = tempfile.mkdtemp(prefix="pulseup-priv-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def python():
    path = os.path.abspath(VENV_PYTHON)  # not realpath: the venv is in the symlink
    if not os.path.exists(path):
        unavailable(f"the project venv is missing: {path}")
    return path


SSH_USER = "pulseup-test-ssh"
SSH_HOME = "/tmp/pulseup-test-ssh-home"


@pytest.fixture
def ssh_user(worker_user):
    """A local account with a fresh home whose authorized_keys the agent may manage."""
    try:
        pw = pwd.getpwnam(SSH_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", SSH_HOME,
                        "--shell", "/usr/sbin/nologin", SSH_USER], check=True)
        pw = pwd.getpwnam(SSH_USER)
    shutil.rmtree(pw.pw_dir, ignore_errors=True)
    os.makedirs(pw.pw_dir, mode=0o750)
    os.chown(pw.pw_dir, pw.pw_uid, pw.pw_gid)
    yield pw
    shutil.rmtree(pw.pw_dir, ignore_errors=True)


@pytest.fixture
def config_file(public_dir):
    """An explicit, readable config file: the host's /etc/pulseup-agent/config (if a package
    installed one) must not leak into the tests; settings come from the environment."""
    path = os.path.join(public_dir, "config")
    with open(path, "w") as handle:
        handle.write("# settings come from the environment in these tests\n")
    os.chmod(path, 0o644)
    return path
