"""The development containers (issue 12; docs/operations.md, "Development containers"): Dockerfile and
docker-compose files.

The repository's Dockerfile is built as it is, FROM a locally imported stand-in
for debian:bookworm-slim (devbase.py), on the harness's private engine; the
build's RUN steps use the host's network (the engine runs with --bridge=none,
so a build container has none of its own) for apt-get and PyPI. Then
docker-compose (v1 only, docs/hosts.md, "The test machines") runs docker-compose.yml unchanged: the
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

import docker
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
def compose(docker_host, dev_image, tmp_path, test_network):
    """docker-compose against the test engine, in a project dir of its own (its .env).

    test_network: the session's pulseup-net exists before any agent container starts, since
    the agent attaches itself to pulseup-net and creates it when missing; the session fixture
    creating it afterwards would make a second network of the same name."""
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


def _start(compose, docker_client, extra_env=None):
    """devserver up, its banner (plus ``extra_env``) into `.env`, then the agent; returns
    (devserver container, agent container, the connected agent's record)."""
    compose("up", "-d", "--no-build", "devserver")
    devserver = _container(docker_client, compose, "devserver")
    banner = _eventually(lambda: _banner(devserver))
    assert banner, devserver.logs()[-3000:]
    settings = {**banner, **(extra_env or {})}
    (compose.dir / ".env").write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    compose("up", "-d", "--no-build", "pulseup-agent")
    agent = _container(docker_client, compose, "pulseup-agent")
    connected = _eventually(lambda: _connected_agent(devserver))
    assert connected, agent.logs()[-5000:]
    return devserver, agent, connected


def test_compose_runs_supervisor_and_worker_against_the_devserver(compose, docker_client):
    devserver, agent, connected = _start(compose, docker_client)
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


class _Relay:
    """TCP relay from an address the containers can reach (their network's gateway on the
    host) to a test server that listens on loopback only (the git server)."""

    def __init__(self, listen_host, target_port):
        from gevent.server import StreamServer
        self.server = StreamServer((listen_host, 0), self._handle)
        self.target = ("127.0.0.1", target_port)

    def start(self):
        self.server.start()
        return self.server.server_port

    def stop(self):
        self.server.stop(timeout=1)

    def _handle(self, client, _address):
        import gevent
        upstream = socket.create_connection(self.target, timeout=30)
        back = gevent.spawn(_pipe, upstream, client)
        _pipe(client, upstream)
        back.join(timeout=30)
        upstream.close()
        client.close()


def _pipe(source, sink):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


@pytest.fixture
def app_repo(docker_client, app_base_image, git_server):
    """(uid, sha) of a Dockerfile app (busybox httpd on 8080 serving index.html); its
    containers and images are removed afterwards."""
    uid = "devapp" + uuid.uuid4().hex[:8]
    _, sha = git_server.add_repo(uid, {
        "Dockerfile": f"FROM {app_base_image}\nCOPY index.html /www/index.html\n",
        "index.html": f"hello from {uid}\n"})
    yield uid, sha
    for container in docker_client.containers.list(all=True, filters={"label": f"pulseup.service_uid={uid}"}):
        container.remove(force=True)
    for image in docker_client.images.list():
        if any(tag.startswith((f"pulseup-app:{uid}", f"pulseup-app-{uid}")) for tag in image.tags):
            docker_client.images.remove(image.id, force=True)


def test_compose_agent_joins_pulseup_net_and_deploys_through_the_gate(compose, docker_host, docker_client, git_server,
                                                                      app_repo):
    """The containerised agent attaches itself to pulseup-net (docs/operations.md, "Development containers"), then a
    Dockerfile app deployed through it passes the readiness gate (HTTP GET of
    health_check_path at the app's pulseup-net address, dialled from inside the agent's
    container). The agent reaches the host's git server through a relay on its network's
    gateway. Note: this engine runs without iptables, so the host would also route between
    bridges; the attachment itself is therefore checked explicitly."""
    uid, sha = app_repo
    compose("up", "-d", "--no-build", "devserver")
    network = docker_client.networks.get(f"{compose.project}_default")
    gateway = network.attrs["IPAM"]["Config"][0]["Gateway"]
    relay = _Relay(gateway, git_server.port)
    port = relay.start()
    try:
        devserver, agent, connected = _start(compose, docker_client, {
            "ALLOW_INSECURE_TRANSPORT": "true", "PULSEUP_GIT_ALLOWED_HOSTS": f"{gateway}:{port}"})
        assert _eventually(lambda: "pulseup-net" in _networks(agent)), (_networks(agent), agent.logs()[-3000:])
        request = {"service_uid": uid, "deployment_uid": f"{uid}-1", "github_repo": f"http://{gateway}:{port}/{uid}.git",
                   "access_token": git_server.token, "github_branch": "main", "commit_sha": sha,
                   "internal_port": 8080, "health_check_path": "/index.html", "health_timeout_seconds": 120,
                   "drain_seconds": 0, "env_vars": {}}
        # the exec's reply comes at the end: a client whose read timeout outlasts the deploy
        patient = docker.DockerClient(base_url=docker_host, timeout=700)
        try:
            code, output = _devserver(patient.containers.get(devserver.id), "call", "--timeout", "600s",
                                      connected["server_uid"], "service.app.deploy", json.dumps(request))
        finally:
            patient.close()
    finally:
        relay.stop()
    reply = json.loads(output)
    code, output = _devserver(devserver, "call", connected["server_uid"], "service.deploy.logs.fetch", json.dumps(
        {"service_uid": uid, "deployment_uid": f"{uid}-1", "log_type": "all", "lines": -1}))
    logs = json.loads(output).get("data") or {}
    if not reply["success"]:
        pytest.fail(f"deploy failed: {reply.get('error')}\n--- deploy log:\n{str(logs.get('logs'))[-4000:]}\n"
                    f"--- agent:\n{agent.logs()[-3000:].decode('utf-8', 'replace')}", pytrace=False)
    app = docker_client.containers.get(reply["data"]["container_name"])
    assert app.status == "running" and "pulseup-net" in _networks(app)
    assert "builder: BuildKit through /usr/bin/docker" in logs["logs"], logs["logs"][-3000:]
    gate = next(step for step in logs["steps"] if step["id"] == "health_check")
    assert gate["status"] == "success", logs["steps"]
    # the agent's own address on pulseup-net shares the app's subnet: the gate's dial stays on it
    agent.reload()
    assert _networks(agent)["pulseup-net"]["NetworkID"] == _networks(app)["pulseup-net"]["NetworkID"]


def _networks(container):
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"]


def test_debug_compose_file_is_valid(compose):
    shutil.copy(os.path.join(REPO, ".env.debug.example"), compose.dir / ".env")
    config = compose("config", file="docker-compose.debug.yml").stdout
    assert "image: pulseup-agent-dev:latest" in config and "LOG_FORMAT: text" in config, config
    assert "CADDY_HTTP_PORT: '8080'" in config, config
