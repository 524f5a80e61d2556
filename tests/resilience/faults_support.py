"""Shared pieces of the fault tests (issue 13): a private Docker engine that can be restarted,
a token git server with a distinctive token, and a real worker process (``python -m agent
worker`` as ``nobody``) that can be SIGKILLed and started again on the same STATE_DIR.

The integration fixtures (tests/integration/conftest.py) are not visible from this directory
and their engine cannot be restarted, so the fault tests build the same services from the
harness classes once per session (:func:`environment`) and tear them down at session end.
The engine's socket belongs to group ``nogroup`` so the unprivileged worker reaches it.
"""

import grp
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import gevent
import pytest
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for _path in (os.path.join(ROOT, "tests", "integration"), os.path.join(ROOT, "tests", "integration", "db")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import dbimages  # noqa: E402
from harness import DockerDaemon, GitServer, free_port, images, require_service, wait_until  # noqa: E402
from harness.process import ManagedProcess, _die_with_parent, search_path  # noqa: E402

NETWORK = "pulseup-net"
FAULT_ENV = "PULSEUP_FAULT_KILL_AT"     # agent/services/interrupted.py
GIT_TOKEN = "ghp_CanaryGit" + secrets.token_hex(12)        # distinctive: found only if leaked
DB_PASSWORD = "Canary-DbPw-" + secrets.token_hex(10)
ENV_SECRET = "Canary-EnvVal-" + secrets.token_hex(10)
HTTP = requests.Session()
HTTP.trust_env = False        # loopback and bridge addresses only: ignore proxy settings

# The app serves /www on 8080 and exits on SIGTERM: busybox httpd as PID 1 ignores it and
# would make every replaced version wait out the 30 s stop grace of the real worker.
APP_CMD = """CMD ["sh", "-c", "trap 'exit 0' TERM; %shttpd -f -p 8080 -h /www & wait"]"""


def app_dockerfile(delay=0):
    """A Dockerfile of the appbase image; ``delay`` seconds pass before it answers HTTP."""
    wait = f"sleep {delay}; " if delay else ""
    return ("FROM pulseup-test/appbase:latest\nCOPY index.html /www/index.html\nEXPOSE 8080\n"
            + APP_CMD % wait + "\n")


class Engine(DockerDaemon):
    """The harness's private dockerd with a socket group and a short shutdown timeout,
    restartable on the same data-root (what ``systemctl restart docker`` does)."""

    def __init__(self, socket_gid):
        super().__init__()
        self.socket_gid = socket_gid
        self._argv = None

    def argv(self):
        if self._argv is None:      # the same address pool after a restart
            self._argv = super().argv() + [f"--group={self.socket_gid}", "--shutdown-timeout=3"]
        return self._argv

    def start(self):
        super().start()
        os.chmod(self.dir, 0o711)   # mkdtemp made it 0700: the worker must reach the socket
        return self

    def restart(self, timeout=90):
        """SIGTERM dockerd alone (it stops its containers and its containerd), start it again."""
        self.process.proc.send_signal(signal.SIGTERM)
        self.process.proc.wait(timeout)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["PATH"] = search_path()
        self.process = ManagedProcess("dockerd", self.argv(), os.path.join(self.dir, "dockerd.log"),
                                      env=env, cwd=self.dir)
        self.process.start()
        wait_until(self._ping, "dockerd to answer after a restart", timeout=timeout, process=self.process)


class FaultEnv:
    """Engine, client, network and git server; images are made when first asked for."""

    def __init__(self):
        import docker

        self.nobody = pwd.getpwnam("nobody")
        self.gid = grp.getgrnam("nogroup").gr_gid
        self.engine = Engine(self.gid).start()
        self.client = docker.DockerClient(base_url=self.engine.host, timeout=120)
        self.client.networks.create(NETWORK, driver="bridge")
        self.git = GitServer()
        self.git.token = GIT_TOKEN
        self.git.start()
        self._images = {}

    def image(self, name):
        makers = {"app": images.build_app_base_image, "caddy": images.build_caddy_image,
                  "postgresql": dbimages.postgres_image}
        if name == "caddy":
            require_service("caddy", "the proxy image copies Debian's caddy binary")
        if name == "postgresql" and not os.path.exists(dbimages.TARBALL) and not shutil.which("debootstrap", path=search_path()):
            pytest.skip("no cached database rootfs and debootstrap is missing")   # as tests/integration/db
        if name not in self._images:
            self._images[name] = makers[name](self.client)
        return self._images[name]

    def close(self):
        for step in (self.client.close, self.git.stop, self.engine.stop):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - teardown goes on
                print(f"fault env teardown: {exc!r}")


_ENV = []


def environment(config):
    """The session's FaultEnv (skips locally, fails with CI=true when a service is missing)."""
    for name in ("docker", "busybox", "git"):
        require_service(name, "the fault tests run a real worker against real services")
    if not _ENV:
        _ENV.append(FaultEnv())
        config.add_cleanup(_close_env)
    return _ENV[0]


def _close_env():
    _ENV.pop().close()


@pytest.fixture(scope="session")
def fault_env(request):
    """Import into a test module to use (this directory's conftest is not ours to change)."""
    return environment(request.config)


@pytest.fixture
def home(fault_env):
    home = AgentHome(fault_env)
    yield home
    home.remove()


@pytest.fixture
def worker(home, devserver):
    """A WorkerProcess, not started yet."""
    worker = WorkerProcess(home, devserver)
    yield worker
    worker.stop()


class AgentHome:
    """The worker's directories in one /tmp dir owned by nobody (short: the proxy's admin
    socket path must fit in sun_path)."""

    SUBDIRS = ("state", "certs", "logs", "apps", "deployments", "deploy-logs", "backups")

    def __init__(self, env):
        self.env = env
        self.path = tempfile.mkdtemp(prefix="pf-", dir="/tmp")
        os.chmod(self.path, 0o755)
        for name in self.SUBDIRS:
            os.makedirs(self.dir(name))
            os.chown(self.dir(name), env.nobody.pw_uid, env.gid)
        self.http_port, self.https_port = free_port(), free_port()

    def dir(self, name):
        return os.path.join(self.path, name)

    def settings(self, devserver):
        ca_file = shutil.copy(devserver.ca_file, os.path.join(self.path, "server-ca.crt"))
        os.chmod(ca_file, 0o644)
        return {
            "WEBSOCKET_URL": devserver.ws_url, "ENROLL_CA_FILE": ca_file, "LOG_LEVEL": "DEBUG",
            "STATE_DIR": self.dir("state"), "CERT_DIR": self.dir("certs"), "AGENT_LOG_DIR": self.dir("logs"),
            "APPS_DIR": self.dir("apps"), "DEPLOYMENT_DIR": self.dir("deployments"),
            "DEPLOYMENT_LOG_DIR": self.dir("deploy-logs"), "PULSEUP_BACKUP_DIR": self.dir("backups"),
            "PULSEUP_BACKUP_STORAGE_ROOTS": self.dir("backups"), "SUPERVISOR_SOCKET": self.dir("supervisor.sock"),
            "RECONNECT_INTERVAL": "0.2", "RECONNECT_BACKOFF_MAX": "1", "DOCKER_HOST": self.env.engine.host,
            "ALLOW_INSECURE_TRANSPORT": "true", "PULSEUP_GIT_ALLOWED_HOSTS": f"127.0.0.1:{self.env.git.port}",
            "DB_IMAGE_PULL": "never", "CADDY_HTTP_PORT": str(self.http_port),
            "CADDY_HTTPS_PORT": str(self.https_port), "CADDY_TLS_ISSUER": "internal",
        }

    def secret_dirs(self):
        """Where a secret must never be written (issue 13, "Secrets")."""
        return [self.dir(name) for name in self.SUBDIRS]

    def remove(self):
        shutil.rmtree(self.path, ignore_errors=True)


class WorkerProcess:
    """``python -m agent worker`` as nobody; its output (JSON log lines) goes to a file."""

    def __init__(self, home, devserver, **settings):
        self.home, self.devserver = home, devserver
        self.settings = dict(home.settings(devserver), **settings)
        self.proc = None
        self.runs = 0
        self.uid = None

    @property
    def out_path(self):
        return os.path.join(self.home.path, f"worker-{self.runs}.out")

    def start(self, timeout=60):
        """Start (enrolling the first time) and wait until the devserver sees it connected."""
        self.runs += 1
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": ROOT,
               "HOME": self.home.path, "JOIN_TOKEN": self.devserver.create_token(), **self.settings}
        nobody = self.home.env.nobody
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "--config", os.devnull, "worker"], cwd=ROOT, env=env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, user=nobody.pw_uid,
                group=self.home.env.gid, extra_groups=[], start_new_session=True,
                preexec_fn=_die_with_parent)     # a killed pytest leaves no worker behind
        previous = self._connection()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            self.uid = self.uid or self._enrolled_uid()
            current = self._connection()
            if self.uid and current is not None and current is not previous:
                return self
            gevent.sleep(0.1)
        raise AssertionError(f"worker did not connect:\n{self.output()[-3000:]}")

    def _enrolled_uid(self):
        try:
            with open(os.path.join(self.home.dir("certs"), "enrollment.json")) as handle:
                return json.load(handle)["server_uid"]
        except (OSError, ValueError, KeyError):
            return None

    def _connection(self):
        state = self.devserver.hub.known(self.uid) if self.uid else None
        return state.conn if state else None

    def call(self, event, data, timeout=180, call_id=None):
        return self.devserver.call(self.uid, event, data, timeout=timeout, call_id=call_id)

    def crash_at(self, point):
        """From the next start, the worker SIGKILLs itself when an operation records the phase
        ``point`` ("deploy:cleanup"...; agent/services/interrupted.py); None: never."""
        if point is None:
            self.settings.pop(FAULT_ENV, None)
        else:
            self.settings[FAULT_ENV] = point

    def wait_crashed(self, timeout=300):
        """Wait until the worker killed itself at its crash point (SIGKILL, nothing else)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the worker did not reach its crash point:\n{self.output()[-3000:]}") from None
        assert code == -signal.SIGKILL, f"worker exited with {code}:\n{self.output()[-3000:]}"

    def kill(self):
        """SIGKILL: no cleanup code of the worker runs."""
        self.proc.kill()
        self.proc.wait(30)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self):
        text = ""
        for run in range(1, self.runs + 1):
            with open(os.path.join(self.home.path, f"worker-{run}.out"), "rb") as handle:
                text += handle.read().decode("utf-8", "replace")
        return text

    def frames(self, event):
        """Data of the ``event`` frames the devserver received from this agent, in order."""
        return [f.get("data") or {} for f in self.devserver.received_frames(self.uid)
                if f.get("type") == "event" and f.get("event") == event]

    def wait_frame(self, event, predicate, timeout=120):
        """The first ``event`` frame whose data satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for data in self.frames(event):
                if predicate(data):
                    return data
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited:\n{self.output()[-3000:]}")
            gevent.sleep(0.1)
        raise AssertionError(f"no {event} frame matched within {timeout}s; got {self.frames(event)[-5:]}")


def deploy_request(env, uid, deployment_uid, sha, **extra):
    data = {"service_uid": uid, "deployment_uid": deployment_uid,
            "github_repo": f"{env.git.base_url}/{uid}.git", "access_token": env.git.token,
            "github_branch": "main", "commit_sha": sha, "internal_port": 8080, "drain_seconds": 0,
            "health_timeout_seconds": 60, "env_vars": {}}
    data.update(extra)
    return data


def app_answer(env, container_name, timeout=5):
    """Body served by an app container on pulseup-net (its address read fresh: a restarted
    engine may give it a new one)."""
    container = env.client.containers.get(container_name)
    address = container.attrs["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
    return HTTP.get(f"http://{address}:8080/", timeout=timeout).text


def service_containers(env, uid):
    return sorted(c.name for c in env.client.containers.list(all=True, filters={"label": f"pulseup.service_uid={uid}"}))


def remove_service(env, uid):
    """Remove what a test's deploys left (containers, images, the database volume)."""
    import docker.errors

    for container in env.client.containers.list(all=True, filters={"label": f"pulseup.service_uid={uid}"}):
        container.remove(force=True, v=True)
    for name in (f"pulseup-db-{uid}",):
        try:
            env.client.containers.get(name).remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
    for volume in env.client.volumes.list(filters={"name": f"pulseup-db-vol-{uid}"}):
        volume.remove(force=True)


def postgres_with(env, worker, uid, sql):
    """Deploy a PostgreSQL database through the worker and run ``sql`` in it; its container."""
    deployed = worker.call("database.deploy", {"service_uid": uid, "type": "postgresql", "password": DB_PASSWORD})
    assert deployed["success"], deployed
    container = env.client.containers.get(f"pulseup-db-{uid}")
    exec_ok(container, ["psql", "-U", "admin", "-d", "app", "-q", "-c", sql])
    return container


def exec_ok(container, argv):
    """stdout of ``argv`` run in ``container``; AssertionError with its output when it fails."""
    result = container.exec_run(argv)
    assert result.exit_code == 0, f"{argv} failed ({result.exit_code}): {result.output.decode()[-2000:]}"
    return result.output.decode()


def remove_container(env, name):
    import docker.errors

    try:
        env.client.containers.get(name).remove(force=True)
    except docker.errors.NotFound:
        pass


def unique(prefix):
    """A service uid no other test of the session uses (the git server is shared)."""
    return f"{prefix}-{secrets.token_hex(3)}"


class ArgvScanner:
    """Reads every /proc/<pid>/cmdline in a native thread of gevent's pool (a greenlet would
    not run while the hub is busy; monkey-patched threads are greenlets) and keeps the argv
    holding any of ``secrets``."""

    def __init__(self, *values):
        self.values = [value.encode() for value in values]
        self.leaks = []
        self.scans = 0
        self._running = True
        self._result = gevent.get_hub().threadpool.spawn(self._run)

    def finish(self):
        self._running = False
        self._result.get(timeout=30)

    def _run(self):
        while self._running:
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as handle:
                        argv = handle.read()
                except OSError:
                    continue
                if any(value in argv for value in self.values):
                    self.leaks.append(argv.replace(b"\0", b" ").decode("utf-8", "replace"))
            self.scans += 1


def files_holding(value, *roots):
    """Paths of the files under ``roots`` whose bytes contain ``value``."""
    found = []
    for root in roots:
        for directory, _, names in os.walk(root):
            for name in names:
                path = os.path.join(directory, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                with open(path, "rb") as handle:
                    if value.encode() in handle.read():
                        found.append(path)
    return found
