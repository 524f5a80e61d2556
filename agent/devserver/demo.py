"""The full ``./run.sh`` demo: the agent deploys an app behind its Caddy, a PostgreSQL
database, and backs the database up, all from local sources (no registry is reachable).

Two steps around ``run.sh``'s start of the devserver and the agent:

``prepare --dir DEMO --user USER [--start-docker]``
    find a Docker engine (``DOCKER_HOST``, else ``/var/run/docker.sock``; with
    ``--start-docker`` start a private ``dockerd`` in ``DEMO/docker``), build the images from
    this host's files (agent/devserver/demo_images.py), make the sample app's git repository,
    pick free ports, write ``DEMO/demo.json`` and print the agent settings the demo needs
    (run.sh appends them to the agent's config). Exit code 3: no engine.
``show --dir DEMO --devserver-dir DIR --listen HOST:PORT --uid SERVER_UID``
    serve the repository over git smart HTTP (the agent accepts http(s) URLs only,
    agent/services/git.py), call ``service.app.deploy`` (its log lines stream from the
    devserver's event stream), ``service.domain.manage``, ``database.deploy`` and
    ``database.backup.create`` through the devserver's call API, print the URLs, and keep the
    git server up until SIGINT or SIGTERM.
"""

if __name__ == "__main__":      # before anything imports ssl or socket (agent/cli.py)
    from gevent import monkey
    monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from agent.devserver import demo_images  # noqa: E402

NO_ENGINE = 3
STATE_FILE = "demo.json"
APP_UID, DB_UID = "demo-app", "demo-db"
DOMAIN = "app.pulseup-demo.localhost"
SAMPLE_FILES = {
    "Dockerfile": f"FROM {demo_images.APPBASE_TAG}\nCOPY index.html /www/index.html\nEXPOSE 8080\n"
                  'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n',
    "index.html": "<!doctype html>\n<title>PulseUp demo</title>\n<h1>Hello from the PulseUp agent</h1>\n"
                  "<p>Built from a local git repository and served through the agent's Caddy.</p>\n",
}
GIT_ENV = {"PATH": demo_images.PATH_ENV, "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "PulseUp demo", "GIT_AUTHOR_EMAIL": "demo@pulseup.invalid",
           "GIT_COMMITTER_NAME": "PulseUp demo", "GIT_COMMITTER_EMAIL": "demo@pulseup.invalid"}


def say(text):
    print(text, file=sys.stderr, flush=True)


# --- the Docker engine ------------------------------------------------------------------------

def reachable(host):
    import docker
    try:
        client = docker.DockerClient(base_url=host, timeout=5)
        try:
            return client.ping()
        finally:
            client.close()
    except Exception:  # any failure means "not this engine"; the caller tries the next
        return False


def find_engine():
    """The address of a reachable engine, or None."""
    for host in (os.environ.get("DOCKER_HOST"), "unix:///var/run/docker.sock"):
        if host and reachable(host):
            return host
    return None


def start_engine(directory):
    """A private dockerd with the flags tests/integration/harness/dockerd.py uses (no iptables,
    no default bridge: ports publish on user-defined networks such as the agent's)."""
    os.makedirs(directory, mode=0o711, exist_ok=True)
    host = f"unix://{directory}/docker.sock"
    if reachable(host):
        return host
    with open("/proc/filesystems") as handle:
        driver = "overlay2" if any(line.split()[-1] == "overlay" for line in handle if line.strip()) else "vfs"
    argv = [shutil.which("dockerd") or "dockerd", f"--storage-driver={driver}", "--iptables=false",
            "--ip-masq=false", "--bridge=none", f"--data-root={directory}/data", f"--exec-root={directory}/exec",
            f"--pidfile={directory}/dockerd.pid", "-H", host]
    if _group_exists("docker"):
        argv += ["--group", "docker"]     # the worker runs with the docker group (agent/supervisor/main.py)
    with open(os.path.join(directory, "dockerd.log"), "ab") as log:
        subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                         env={"PATH": demo_images.PATH_ENV})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if reachable(host):
            return host
        time.sleep(0.3)
    raise SystemExit(f"dockerd did not answer within 60 s; see {directory}/dockerd.log")


def _group_exists(name):
    import grp
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


# --- the sample app's repository ----------------------------------------------------------

def git(*args, cwd=None):
    done = subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def make_repository(root):
    """``root/sample.git`` seeded with the sample app (kept when it exists); its commit sha."""
    bare = os.path.join(root, "sample.git")
    if not os.path.isdir(bare):
        os.makedirs(root, exist_ok=True)
        work = tempfile.mkdtemp(prefix="pulseup-demo-app-")
        try:
            for name, content in SAMPLE_FILES.items():
                with open(os.path.join(work, name), "w") as handle:
                    handle.write(content)
            git("init", "-q", "-b", "main", cwd=work)
            git("add", ".", cwd=work)
            git("commit", "-q", "-m", "PulseUp demo app", cwd=work)
            git("clone", "-q", "--bare", work, bare)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return git("--git-dir", bare, "rev-parse", "main")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- prepare ------------------------------------------------------------------------------

def missing_tools():
    """What the image builds and the repository need from this host, that it lacks."""
    needs = {demo_images.BUSYBOX: "busybox-static", demo_images.CADDY: "caddy"}
    missing = [package for path, package in needs.items() if not os.access(path, os.X_OK)]
    return missing + [tool for tool in ("git", "ldd") if shutil.which(tool, path=demo_images.PATH_ENV) is None]


def prepare(args):
    missing = missing_tools()
    if missing:
        say(f"The full demo needs {', '.join(missing)} (Debian packages of those names; ldd is in libc-bin).")
        return NO_ENGINE
    host = find_engine() or (start_engine(os.path.join(args.dir, "docker")) if args.start_docker else None)
    if host is None:
        say("No Docker engine is reachable (DOCKER_HOST, /var/run/docker.sock).")
        return NO_ENGINE
    import docker
    client = docker.DockerClient(base_url=host, timeout=300)
    try:
        say(f"Building the demo images from this host's files in the engine at {host}...")
        images = {"caddy": demo_images.caddy_image(client), "app": demo_images.appbase_image(client),
                  "postgres": demo_images.postgres_image(client)}
    finally:
        client.close()
    state = {"docker_host": host, "git_root": os.path.join(args.dir, "git"), "git_port": free_port(),
             "http_port": free_port(), "https_port": free_port(), "images": images}
    state["commit_sha"] = make_repository(state["git_root"])
    dirs = _agent_dirs(args.dir, args.user)
    with open(os.path.join(args.dir, STATE_FILE), "w") as handle:
        json.dump(state, handle, indent=2)
    print(agent_settings(state, dirs), end="")
    return 0


def _agent_dirs(demo_dir, user):
    import pwd
    account = pwd.getpwnam(user)
    dirs = {name: os.path.join(demo_dir, "agent", name.lower()) for name in ("APPS_DIR", "DEPLOYMENT_DIR")}
    dirs["DEPLOYMENT_LOG_DIR"] = os.path.join(demo_dir, "logs", "deployments")
    dirs["PULSEUP_BACKUP_DIR"] = os.path.join(demo_dir, "backups")
    for path in dirs.values():
        os.makedirs(path, mode=0o750, exist_ok=True)
        os.chown(path, account.pw_uid, account.pw_gid)
    return dirs


def agent_settings(state, dirs):
    """The config lines the demo adds to the agent's (each setting is documented in agent/config.py)."""
    settings = {"DOCKER_HOST": state["docker_host"], "ALLOW_INSECURE_TRANSPORT": "true",
                "PULSEUP_GIT_ALLOWED_HOSTS": f"127.0.0.1:{state['git_port']}",
                "CADDY_IMAGE": state["images"]["caddy"], "CADDY_TLS_ISSUER": "internal",
                "CADDY_HTTP_PORT": state["http_port"], "CADDY_HTTPS_PORT": state["https_port"],
                "DB_IMAGE_PULL": "never", **dirs}
    if state["images"]["postgres"]:
        settings["DB_IMAGE_POSTGRESQL"] = state["images"]["postgres"]
    return "".join(f"{name}={value}\n" for name, value in settings.items())


# --- show ---------------------------------------------------------------------------------

def show(args):
    from agent.devserver.demo_show import Show
    with open(os.path.join(args.dir, STATE_FILE)) as handle:
        state = json.load(handle)
    demo = Show(state, args.devserver_dir, args.listen, args.uid)
    demo.start_git()
    try:
        ok = demo.run()
        if args.exit:
            return 0 if ok else 1
        _wait_for_stop()
        return 0 if ok else 1
    finally:
        demo.stop()


def _wait_for_stop():
    import gevent
    import gevent.event
    stop = gevent.event.Event()
    handlers = [gevent.signal_handler(signum, stop.set) for signum in (signal.SIGINT, signal.SIGTERM)]
    try:
        stop.wait()
    finally:
        for handler in handlers:
            handler.cancel()


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m agent.devserver.demo", description=__doc__.split("\n")[0])
    steps = parser.add_subparsers(dest="step", required=True)
    first = steps.add_parser("prepare")
    first.add_argument("--dir", required=True)
    first.add_argument("--user", required=True, help="the user the worker runs as")
    first.add_argument("--start-docker", action="store_true", help="start a private dockerd when none answers")
    second = steps.add_parser("show")
    second.add_argument("--dir", required=True)
    second.add_argument("--devserver-dir", required=True)
    second.add_argument("--listen", required=True)
    second.add_argument("--uid", required=True, help="the connected agent's server_uid")
    second.add_argument("--exit", action="store_true", help="return after the demo instead of waiting")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return prepare(args) if args.step == "prepare" else show(args)


if __name__ == "__main__":
    sys.exit(main())
