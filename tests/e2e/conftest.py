"""One real agent for the whole end-to-end package (issue 18).

``pulseup-agent run`` as root (tests/e2e/agent_run.py: the real CLI with the supervisor's host
seam swapped so that reboots and package upgrades are recorded, never done), its worker child
as the unprivileged ``pulseup-test-worker``, enrolled with a join token against a devserver
over TLS, using the private dockerd, the token git server, the Caddy and app images of the
integration suite and the PostgreSQL stand-in image of tests/integration/db. Tests reach the
agent only through the devserver's call API and event stream (:class:`wire.Wire`).

The fixtures are package-scoped (built from the same harness calls as the integration
suite's session fixtures): in a whole-suite run the engine, its containers and the agent stop
when the last e2e test is done instead of idling through the rest of the run.

Each test module declares the commands it covers with ``@pytest.mark.covers(name, ...,
outcome="success"|"refusal")``; tests/e2e/test_e2e_meta.py checks every registered command has both.
"""

import grp
import json
import os
import pwd
import random
import secrets
import shutil
import socket
import subprocess
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent import __version__
from agent.devserver.server import DevServer
from agent.protocol import events
from agent.protocol.update import sign
from tests.e2e.wire import Wire
from tests.integration.conftest import _sweep_stale_service_dirs  # noqa: F401  (autouse: old dirs swept)
from tests.resilience.faults_support import Engine

import dbimages  # noqa: E402  (tests/integration/db, on sys.path through faults_support)
from harness import GitServer, images, require_service  # noqa: E402
from harness.process import ManagedProcess, make_tempdir  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCHER = os.path.join(ROOT, "tests", "e2e", "agent_run.py")
VENV_PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
WORKER_USER = "pulseup-test-worker"     # as tests/integration/privilege


def pytest_configure(config):
    config.addinivalue_line("markers", "covers(*commands, outcome): commands an e2e test drives (test_e2e_meta.py)")


def host_port(taken=()):
    """A port free on all addresses now, below the ephemeral range (net.ipv4.ip_local_port_range,
    32768+ by default) so that no other process on the machine is handed it meanwhile."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        if port in taken:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 20000-32000")


def _system_user(name, home=None):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        argv = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
        subprocess.run(argv + (["--home-dir", home] if home else []) + [name], check=True)
        return pwd.getpwnam(name)


@pytest.fixture(scope="package")
def worker_user():
    require_service("docker", "the e2e agent runs as root with a private Docker engine")
    return _system_user(WORKER_USER)


@pytest.fixture(scope="package")
def ssh_user(worker_user):
    """A local account whose authorized_keys the agent may manage (PULSEUP_SSH_USERS); one per
    session, with its home in a session dir, so that parallel sessions never share a file."""
    for stale in pwd.getpwall():     # of killed sessions, whose dirs were swept already
        if stale.pw_name.startswith("pe2essh") and not os.path.isdir(stale.pw_dir):
            subprocess.run(["userdel", stale.pw_name], check=False, capture_output=True)
    home = make_tempdir("e2essh")
    os.chmod(home, 0o755)
    name = "pe2essh" + secrets.token_hex(3)
    pw = _system_user(name, os.path.join(home, name))
    os.makedirs(pw.pw_dir, mode=0o750)
    os.chown(pw.pw_dir, pw.pw_uid, pw.pw_gid)
    try:
        yield pw
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="package")
def docker_host(worker_user):
    """The integration engine, its socket owned by the worker's group (the worker is not root)."""
    for name in ("docker", "busybox", "git", "caddy"):
        require_service(name, "the e2e agent uses the real engine, git server and Caddy")
    engine = Engine(worker_user.pw_gid).start()
    try:
        yield engine.host
    finally:
        engine.stop()


@pytest.fixture(scope="package")
def docker_client(docker_host):
    import docker

    client = docker.DockerClient(base_url=docker_host, timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="package")
def base_image(docker_client):
    return images.build_base_image(docker_client)


@pytest.fixture(scope="package")
def app_base_image(docker_client):
    return images.build_app_base_image(docker_client)


@pytest.fixture(scope="package")
def caddy_image(docker_client):
    return images.build_caddy_image(docker_client)


@pytest.fixture(scope="package")
def test_network(docker_client):
    """pulseup-net, made before the agent starts (the integration suite's test_network)."""
    network = docker_client.networks.create("pulseup-net", driver="bridge")
    yield network.name


@pytest.fixture(scope="package")
def git_server():
    server = GitServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="package")
def db_image(docker_client, base_image):
    """PostgreSQL stand-in of the official image (tests/integration/db/dbimages.py)."""
    require_service("postgres", "the database commands run a PostgreSQL container")
    return dbimages.postgres_image(docker_client)


@pytest.fixture(scope="package")
def devserver():
    data = make_tempdir("e2edev")      # swept by a later session if this one is killed
    server = DevServer(data, listen="127.0.0.1:0", auth_timeout=10).start()
    yield server
    server.stop()
    shutil.rmtree(data, ignore_errors=True)


class Home:
    """The agent's directories in one short /tmp dir (the proxy's admin socket path must fit
    in sun_path); worker-owned where the worker writes."""

    WORKER_DIRS = ("state", "certs", "logs", "apps", "deployments", "deploy-logs", "backups", "storage")

    def __init__(self, user):
        self.path = make_tempdir("e2e")    # short: the proxy's admin socket path must fit in sun_path
        os.chmod(self.path, 0o755)
        for name in self.WORKER_DIRS:
            os.makedirs(self.dir(name), mode=0o750)
            os.chown(self.dir(name), user.pw_uid, user.pw_gid)
        for name in ("roots/log/pulseup", "roots/tmp", "run"):
            os.makedirs(self.dir(name), mode=0o755)
        self.seam_record = self.dir("roots/seam.jsonl")
        self.uninstall_record = self.dir("roots/uninstall.ran")
        script = self.dir("roots/uninstall-standin")
        with open(script, "w") as handle:      # the packaged uninstall's stand-in: records, removes nothing
            handle.write(f"#!/bin/sh\necho \"uninstall stand-in ran as $(id -u)\" >> {self.uninstall_record}\n")
        os.chmod(script, 0o755)

    def dir(self, name):
        return os.path.join(self.path, name)

    def seam_runs(self):
        if not os.path.exists(self.seam_record):
            return []
        with open(self.seam_record) as handle:
            return [json.loads(line)["argv"] for line in handle if line.strip()]

    def remove(self):
        shutil.rmtree(self.path, ignore_errors=True)


def publish_update(devserver, home, version):
    """A signed manifest for ``version`` at the devserver's /api/update/manifest; the public
    key (root-owned, as the supervisor requires) in the home dir."""
    key = Ed25519PrivateKey.generate()
    key_file = os.path.join(home.path, "update.pub")
    with open(key_file, "wb") as handle:
        handle.write(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    os.chmod(key_file, 0o644)
    root = os.path.join(devserver.data_dir, "update")
    os.makedirs(os.path.join(root, "files"), exist_ok=True)
    with open(os.path.join(root, "files", "pulseup-agent.deb"), "wb") as handle:
        handle.write(b"not a package")
    manifest = {"version": version, "url": f"{devserver.url}/api/update/files/pulseup-agent.deb",
                "size": 13, "sha256": "0" * 64, "published_at": "2026-01-01T00:00:00Z",
                "changelog": f"release {version}"}
    body = json.dumps(manifest).encode()
    with open(os.path.join(root, "manifest.json"), "wb") as handle:
        handle.write(body)
    with open(os.path.join(root, "manifest.json.sig"), "w") as handle:
        handle.write(sign(body, key))
    return key_file, manifest


def agent_env(home, devserver, user, ssh, docker_host, git, caddy_image, db_image, key_file):
    http_port = host_port()
    ca = shutil.copy(devserver.ca_file, home.dir("server-ca.crt"))
    os.chmod(ca, 0o644)
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
        "E2E_SEAM_RECORD": home.seam_record, "E2E_ROOTS": home.dir("roots"),
        "WEBSOCKET_URL": devserver.ws_url, "JOIN_TOKEN": devserver.create_token(), "ENROLL_CA_FILE": ca,
        "STATE_DIR": home.dir("state"), "CERT_DIR": home.dir("certs"), "AGENT_LOG_DIR": home.dir("logs"),
        "APPS_DIR": home.dir("apps"), "DEPLOYMENT_DIR": home.dir("deployments"),
        "DEPLOYMENT_LOG_DIR": home.dir("deploy-logs"), "PULSEUP_BACKUP_DIR": home.dir("backups"),
        "PULSEUP_BACKUP_STORAGE_ROOTS": f"{home.dir('backups')}:{home.dir('storage')}",
        "SUPERVISOR_SOCKET": home.dir("run/supervisor.sock"),
        "WORKER_USER": user.pw_name, "WORKER_GROUP": grp.getgrgid(user.pw_gid).gr_name,
        "RECONNECT_INTERVAL": "0.2", "RECONNECT_BACKOFF_MAX": "1", "GRACEFUL_TIMEOUT": "5",
        "LOG_LEVEL": "DEBUG", "LOG_FORMAT": "json", "DOCKER_HOST": docker_host,
        "ALLOW_INSECURE_TRANSPORT": "true", "PULSEUP_GIT_ALLOWED_HOSTS": f"127.0.0.1:{git.port}",
        "CADDY_IMAGE": caddy_image, "CADDY_HTTP_PORT": str(http_port), "CADDY_HTTPS_PORT": str(host_port({http_port})),
        "CADDY_TLS_ISSUER": "internal", "DB_IMAGE_POSTGRESQL": db_image, "DB_IMAGE_PULL": "never",
        "PULSEUP_SSH_USERS": ssh.pw_name, "UPDATE_MANIFEST_URL": devserver.url + "/api/update/manifest",
        "UPDATE_PUBLIC_KEY_FILE": key_file,
    }


class RunningAgent:
    """The ``run`` process, its home, and the wire to it."""

    def __init__(self, home, devserver, env, config_file):
        self.home, self.devserver, self.env = home, devserver, env
        self.log_path = os.path.join(env["AGENT_LOG_DIR"], "supervisor.log")
        self.process = ManagedProcess("pulseup-agent-run", [VENV_PYTHON, LAUNCHER, "--config", config_file, "run"],
                                      self.log_path, env=env, cwd="/")
        self.uid = None
        self.wire = None

    def start(self, timeout=90):
        self.process.start()
        deadline = time.monotonic() + timeout
        while self.uid is None:     # follow the events from enrollment on, before the first auth
            self._check(deadline)
            self.uid = self._enrolled_uid()
            time.sleep(0.02)
        self.wire = Wire(self.devserver, self.uid).follow()
        while self.devserver.wait_connected(self.uid, timeout=0.5) is None:
            self._check(deadline)
        return self

    def _check(self, deadline):
        assert self.process.alive(), f"run exited:\n{self.output()[-5000:]}"
        assert time.monotonic() < deadline, f"the agent did not connect:\n{self.output()[-5000:]}"

    def _enrolled_uid(self):
        try:
            with open(os.path.join(self.env["CERT_DIR"], "enrollment.json")) as handle:
                return json.load(handle)["server_uid"]
        except (OSError, ValueError, KeyError):
            return None

    def workers(self):
        """The live worker children of the ``run`` process (psutil.Process objects)."""
        import psutil

        return [child for child in psutil.Process(self.process.pid).children()
                if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]

    def output(self):
        with open(self.log_path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")

    def stop(self):
        if self.wire is not None:
            self.wire.close()
        self.process.stop(timeout=30)


@pytest.fixture(scope="package")
def e2e_agent(worker_user, ssh_user, docker_host, docker_client, test_network, git_server, caddy_image,
              app_base_image, db_image, devserver):
    if not os.path.exists(VENV_PYTHON):
        pytest.fail(f"the project venv is missing: {VENV_PYTHON} (the worker user must execute it)")
    home = Home(worker_user)
    key_file, _ = publish_update(devserver, home, __version__)
    config_file = home.dir("config")
    with open(config_file, "w") as handle:
        handle.write("# settings come from the environment in these tests\n")
    os.chmod(config_file, 0o644)
    env = agent_env(home, devserver, worker_user, ssh_user, docker_host, git_server, caddy_image, db_image,
                    key_file)
    agent = RunningAgent(home, devserver, env, config_file)
    try:
        yield agent.start()
    finally:
        agent.stop()
        if os.environ.get("E2E_KEEP_LOG"):
            shutil.copy(agent.log_path, os.environ["E2E_KEEP_LOG"])
        home.remove()


@pytest.fixture(scope="package")
def wire(e2e_agent):
    return e2e_agent.wire


@pytest.fixture(autouse=True)
def _events_match_the_catalogue(request):
    """Every event the running agent sent during a test has its schema in agent/protocol/events.py
    (the agent itself only logs a mismatch: it runs in production mode here)."""
    agent = request.getfixturevalue("e2e_agent") if "e2e_agent" in request.fixturenames else None
    since = agent.wire.mark() if agent is not None and agent.wire is not None else None
    yield
    if since is None:
        return
    found = [(frame.get("event"), events.problems(frame.get("event"), frame.get("data")))
             for sse, frame in agent.wire.frames[since:] if frame.get("type") == "event"]
    assert [item for item in found if item[1] is not None] == []


@pytest.fixture(autouse=True)
def _agent_alive_after(request):
    """A test that killed the shared agent must say so at once, not in the next module."""
    yield
    if "e2e_agent" in request.fixturenames:
        agent = request.getfixturevalue("e2e_agent")
        assert agent.process.alive(), f"the agent exited:\n{agent.output()[-5000:]}"
