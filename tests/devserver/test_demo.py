"""Smoke test of `./run.sh`'s full demo (agent/devserver/demo.py) against a private dockerd:
`prepare` builds the images and the sample repository, `pulseup-agent run` (root supervisor,
unprivileged worker) connects to a devserver, and `show` deploys the app behind the agent's
Caddy, deploys PostgreSQL and backs it up through the devserver's call API."""

import grp
import json
import os
import pwd
import shutil
import subprocess as std_subprocess
import sys
import tempfile
import time

import gevent
import gevent.subprocess as subprocess
import pytest
import requests

from agent.devserver.demo import DOMAIN, STATE_FILE
from agent.devserver.demo_show import Show
from agent.devserver.server import DevServer
from tests.integration.harness import DockerDaemon, require_service
from tests.integration.harness.require import unavailable

USER = "pulseup-demo-test"
BOUND = 600     # seconds for the whole demo; it takes about 40 s here


@pytest.fixture(scope="module")
def demo_user():
    if os.geteuid() != 0:
        unavailable("the demo test runs the agent as root with an unprivileged worker")
    try:
        pwd.getpwnam(USER)
    except KeyError:
        std_subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                           check=True)
    return pwd.getpwnam(USER)


@pytest.fixture(scope="module")
def engine(demo_user):
    require_service("docker", "the demo deploys into a private Docker engine")
    require_service("busybox", "the demo images are made from busybox-static")
    require_service("caddy", "the demo's proxy image copies Debian's caddy")
    daemon = DockerDaemon().start()
    try:
        # the worker reaches the engine through its docker group, as with a packaged engine
        os.chmod(daemon.dir, 0o711)
        os.chown(daemon.socket_path, 0, grp.getgrnam("docker").gr_gid)
        os.chmod(daemon.socket_path, 0o660)
        yield daemon.host
    finally:
        daemon.stop()


@pytest.fixture
def demo_dir():
    path = tempfile.mkdtemp(prefix="demo-", dir="/tmp")   # short: sockets live below it
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def prepare(demo_dir, engine, user):
    done = subprocess.run([sys.executable, "-m", "agent.devserver.demo", "prepare", "--dir", demo_dir,
                           "--user", user.pw_name], capture_output=True, text=True, timeout=BOUND,
                          env={"PATH": os.environ["PATH"], "DOCKER_HOST": engine})
    assert done.returncode == 0, done.stderr
    return done.stdout


def agent_dirs(demo_dir, user):
    """What run.sh makes before `prepare`: the worker's own directories."""
    for name in ("certs", "state", "logs"):
        os.makedirs(f"{demo_dir}/{name}", mode=0o700)
        os.chown(f"{demo_dir}/{name}", user.pw_uid, user.pw_gid)


def agent_config(demo_dir, server, user, extra):
    shutil.copy(server.ca_file, f"{demo_dir}/ca.crt")
    os.chmod(f"{demo_dir}/ca.crt", 0o644)
    path = f"{demo_dir}/agent.conf"
    with open(path, "w") as handle:
        handle.write(f"WEBSOCKET_URL={server.ws_url}\nJOIN_TOKEN={server.create_token()}\n"
                     f"ENROLL_CA_FILE={demo_dir}/ca.crt\nCERT_DIR={demo_dir}/certs\nSTATE_DIR={demo_dir}/state\n"
                     f"AGENT_LOG_DIR={demo_dir}/logs\nSUPERVISOR_SOCKET={demo_dir}/run/supervisor.sock\n"
                     f"WORKER_USER={user.pw_name}\nWORKER_GROUP={grp.getgrgid(user.pw_gid).gr_name}\n" + extra)
    os.chmod(path, 0o644)
    return path


def wait_connected(server, proc, log_path):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, open(log_path).read()[-3000:]
        connected = [a["server_uid"] for a in server.agents() if a["connected"]]
        if connected:
            return connected[0]
        gevent.sleep(0.2)
    raise AssertionError("the agent did not connect: " + open(log_path).read()[-3000:])


def test_demo_deploys_app_database_and_backup(engine, demo_user, demo_dir, tmp_path, capsys):
    agent_dirs(demo_dir, demo_user)
    settings = prepare(demo_dir, engine, demo_user)
    assert f"DOCKER_HOST={engine}\n" in settings and "CADDY_TLS_ISSUER=internal\n" in settings
    with open(os.path.join(demo_dir, STATE_FILE)) as handle:
        state = json.load(handle)
    server = DevServer(str(tmp_path / "dev"), auth_timeout=5).start()
    log_path = os.path.join(demo_dir, "agent.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "agent", "--config",
                                 agent_config(demo_dir, server, demo_user, settings), "run"],
                                stdout=log, stderr=log, cwd="/", env={"PATH": os.environ["PATH"]})
    show = None
    try:
        uid = wait_connected(server, proc, log_path)
        show = Show(state, server.data_dir, f"127.0.0.1:{server.port}", uid)
        show.start_git()
        with gevent.Timeout(BOUND):
            assert show.run(), open(log_path).read()[-3000:]
        page = requests.get(f"http://127.0.0.1:{state['http_port']}/", headers={"Host": DOMAIN}, timeout=10,
                            proxies={"http": None})
        assert page.status_code == 200 and "Hello from the PulseUp agent" in page.text
        backups = [os.path.join(root, name) for root, _, names in os.walk(os.path.join(demo_dir, "backups"))
                   for name in names if not name.endswith(".json")]
        assert backups and all(os.path.getsize(path) > 0 for path in backups), backups
        shown = capsys.readouterr()
        assert "  | deploy completed" in shown.err and "  | backup 100%" in shown.err   # live progress
        assert f"App:      http://{DOMAIN}:{state['http_port']}/" in shown.out
        assert f"Console:  https://127.0.0.1:{server.port}/" in shown.out
    finally:
        if show is not None:
            show.stop()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        server.stop()
