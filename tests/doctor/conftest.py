"""Fixtures of the doctor tests: a good set-up made of real parts, which each test breaks in one place.

The good set-up: a DevServer on port 0 (real TLS), an identity enrolled against it by the
agent's own enrollment code, a private dockerd (tests/integration/harness/dockerd.py), the
real supervisor IPC server (agent/supervisor/main.py) on a socket in a short temp dir, and a
``worker.status`` report sent to it over the IPC protocol as the worker does.
"""

import grp
import os
import pwd
import shutil
import tempfile

import pytest

from agent import __version__, config
from agent.devserver.server import DevServer
from agent.supervisor.main import Supervisor
from agent.worker.enroll import enroll
from agent.worker.ipc_client import SupervisorClient
from tests.integration.harness import DockerDaemon, require_service


@pytest.fixture(scope="session")
def docker_host():
    require_service("docker", "the doctor checks a real Docker engine")
    daemon = DockerDaemon().start()
    try:
        yield daemon.host
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def devserver(tmp_path_factory):
    server = DevServer(str(tmp_path_factory.mktemp("dev")), auth_timeout=5.0).start()
    yield server
    server.stop()


class Setup:
    """A host directory tree and config that pass every check; ``write_config`` saves it as a file."""

    def __init__(self, root, server, docker_host):
        self.root, self.server = root, server
        self.settings = {
            "WEBSOCKET_URL": server.ws_url, "ENROLL_CA_FILE": server.ca_file,
            "CERT_DIR": f"{root}/certs", "STATE_DIR": f"{root}/state", "PULSEUP_BACKUP_DIR": f"{root}/backups",
            "SUPERVISOR_SOCKET": f"{root}/run/supervisor.sock", "DOCKER_HOST": docker_host,
            "WORKER_USER": pwd.getpwuid(os.geteuid()).pw_name, "WORKER_GROUP": grp.getgrgid(os.getegid()).gr_name,
        }
        for name in ("state", "backups"):
            os.makedirs(f"{root}/{name}", mode=0o700)
        self.supervisor = None

    def cfg(self, **changes):
        settings = {**self.settings, **changes}
        return config.load(environ={}, cli_overrides=None, config_file=self.write_config(settings))

    def write_config(self, settings=None):
        path = f"{self.root}/agent.conf"
        with open(path, "w") as handle:
            handle.writelines(f"{k}={v}\n" for k, v in (settings or self.settings).items())
        return path

    def enroll(self, server=None, cert_dir=None):
        server = server or self.server
        cfg = self.cfg(WEBSOCKET_URL=server.ws_url, ENROLL_CA_FILE=server.ca_file,
                       CERT_DIR=cert_dir or self.settings["CERT_DIR"])
        return enroll(cfg, server.create_token(), {})

    def start_supervisor(self, report=True):
        self.supervisor = Supervisor(self.cfg())
        self.supervisor.start()
        if report:
            client = SupervisorClient(self.settings["SUPERVISOR_SOCKET"])
            try:
                client.call("worker.status", {"connected": True, "version": __version__}, timeout=10)
            finally:
                client.close()

    def stop_supervisor(self):
        if self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor = None


@pytest.fixture
def setup(devserver, docker_host):
    # short: the supervisor socket path must fit in sun_path (unix(7))
    root = tempfile.mkdtemp(prefix="dr-", dir="/tmp")
    made = Setup(root, devserver, docker_host)
    made.enroll()
    made.start_supervisor()
    try:
        yield made
    finally:
        made.stop_supervisor()
        shutil.rmtree(root, ignore_errors=True)
