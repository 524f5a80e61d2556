"""The development containers (issue 12, decisions 37): Dockerfile and docker-compose files.

The repository's Dockerfile is built as it is, FROM a locally imported stand-in
for debian:bookworm-slim (devbase.py), on the harness's private engine; the
build's RUN steps use the host's network (the engine runs with --bridge=none,
so a build container has none of its own) for apt-get and PyPI. Then
docker-compose (v1, ENVIRONMENT.md) runs docker-compose.yml unchanged: the
devserver first, its join token and CA pin into `.env` as the file's header
says, then the agent container (`pulseup-agent run`: root supervisor plus a
worker child as pulseup-worker), which enrolls, connects and answers
agent.ping through the devserver's own CLI.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid

import docker.errors
import pytest

from agent import __version__
from harness import require_service
from harness.require import unavailable

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import devbase  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(_HERE)))
IMAGE = "pulseup-agent-dev:latest"       # the compose files' image
DEVSERVER_CLI = ["pulseup-agent", "devserver", "--data-dir", "/data", "--listen", "0.0.0.0:9443"]
SETTLE = 120


@pytest.fixture(scope="module")
def dev_image(docker_client):
    """The repository's Dockerfile built FROM the imported debian:bookworm-slim stand-in."""
    require_service("docker", "builds the development image")
    if shutil.which("docker-compose") is None:
        unavailable("docker-compose is not installed (run scripts/install-test-deps.sh as root)")
    if not os.path.exists(devbase.TARBALL) and not devbase.debootstrap_possible():
        unavailable("no cached dev base rootfs and debootstrap is missing")
    devbase.import_base(docker_client)
    # path=REPO: the SDK applies the repository's .dockerignore, as `docker build .` does.
    try:
        docker_client.images.build(path=REPO, tag=IMAGE, network_mode="host", pull=False, rm=True,
                                   forcerm=True, timeout=900)
    except docker.errors.BuildError as exc:
        output = "".join(entry.get("stream", "") for entry in exc.build_log)
        pytest.fail(f"building the Dockerfile failed: {exc.msg}\n{output[-6000:]}", pytrace=False)
    return IMAGE


@pytest.fixture
def compose(docker_host, dev_image, tmp_path):
    """docker-compose against the test engine, in a project dir of its own (its .env)."""
    project = "pulseupdev" + uuid.uuid4().hex[:8]
    env = {**os.environ, "DOCKER_HOST": docker_host, "COMPOSE_PROJECT_NAME": project,
           "DEVSERVER_PORT": str(_free_port()), "DOCKER_SOCKET": docker_host[len("unix://"):],
           "PULSEUP_DOCKER_STATE": str(tmp_path / "state")}
    (tmp_path / ".env").write_text("")

    def run(*args, file="docker-compose.yml", check=True, timeout=300):
        argv = ["docker-compose", "-f", os.path.join(REPO, file), "--project-directory", str(tmp_path), *args]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        assert not check or done.returncode == 0, f"{argv} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done
    run.project, run.dir = project, tmp_path
    try:
        yield run
    finally:
        run("down", "-v", "--timeout", "5", check=False)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _container(client, compose, service):
    found = client.containers.list(all=True, filters={"label": [
        f"com.docker.compose.project={compose.project}", f"com.docker.compose.service={service}"]})
    assert len(found) == 1, found
    return found[0]


def _eventually(check, timeout=SETTLE, interval=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    return None


def _banner(container):
    """JOIN_TOKEN and ENROLL_CA_PIN printed by `devserver serve`, once it listens."""
    logs = container.logs().decode("utf-8", "replace")
    found = dict(re.findall(r"(?m)^(JOIN_TOKEN|ENROLL_CA_PIN)=(\S+)$", logs))
    return found if len(found) == 2 else None


def _devserver(container, *args):
    code, output = container.exec_run(DEVSERVER_CLI + list(args))
    return code, output.decode("utf-8", "replace")


def _connected_agent(container):
    code, output = _devserver(container, "agents")
    agents = json.loads(output)["agents"] if code == 0 else []
    return next((a for a in agents if a["connected"]), None)


def test_compose_runs_supervisor_and_worker_against_the_devserver(compose, docker_client):
    compose("up", "-d", "--no-build", "devserver")
    devserver = _container(docker_client, compose, "devserver")
    banner = _eventually(lambda: _banner(devserver))
    assert banner, devserver.logs()[-3000:]
    (compose.dir / ".env").write_text("".join(f"{key}={value}\n" for key, value in banner.items()))
    compose("up", "-d", "--no-build", "pulseup-agent")
    agent = _container(docker_client, compose, "pulseup-agent")
    connected = _eventually(lambda: _connected_agent(devserver))
    assert connected, agent.logs()[-5000:]
    assert connected["version"] == __version__
    code, output = _devserver(devserver, "call", connected["server_uid"], "agent.ping", '{"probe": "dev"}')
    reply = json.loads(output)
    assert code == 0 and reply["success"] is True, output
    assert reply["data"]["echo"] == {"probe": "dev"} and reply["data"]["version"] == __version__
    # One container, two processes: the root supervisor and its worker child as pulseup-worker.
    # (`docker top` runs the host's ps: numeric uids, the names would be the host's.)
    worker_uid = agent.exec_run(["id", "-u", "pulseup-worker"]).output.decode().strip()
    processes = [(row[1], row[2]) for row in agent.top(ps_args="-eo pid,uid,args")["Processes"]]
    assert any(uid == "0" and cmd.endswith(" run") for uid, cmd in processes), processes
    assert any(uid == worker_uid and "worker" in cmd for uid, cmd in processes), processes
    # The entrypoint handed the bind-mounted STATE_DIR (created by Docker as root) to the worker.
    assert agent.exec_run(["stat", "-c", "%U %a", "/var/lib/pulseup/state"]).output.split() == \
        [b"pulseup-worker", b"700"]


def test_debug_compose_file_is_valid(compose):
    shutil.copy(os.path.join(REPO, ".env.debug.example"), compose.dir / ".env")
    config = compose("config", file="docker-compose.debug.yml").stdout
    assert "image: pulseup-agent-dev:latest" in config and "LOG_FORMAT: text" in config, config
    assert "CADDY_HTTP_PORT: '8080'" in config, config
