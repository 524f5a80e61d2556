"""Benchmark 9: deploy of a small Dockerfile app, call -> serving through Caddy, vs by hand.

Everything is real and private to the run (the integration harness, by import): a Docker
engine (tests/integration/harness/dockerd.py), a token-protected git smart-HTTP server
(gitserver.py), the test images (images.py: an app base with busybox httpd, and a Caddy image
made from Debian's caddy). A real worker (``python -m bench.common worker``) connected to the
in-process devserver gets the calls; its Caddy container publishes on free loopback ports.

  agent deploy     ``service.app.deploy`` of a fresh commit (clone, build, run, readiness
                   gate), then ``service.domain.manage add``; timed until the first 200 with
                   the commit's body through Caddy (Host header)
  by hand          ``git clone``, ``docker build`` (classic builder), ``docker run`` publishing
                   on loopback, first 200 with the same body: the docker CLI and git(1)
  agent redeploy   ``service.app.deploy`` of the commit already running (new deployment uid),
                   until the reply (the route points at the new container) and a 200 through Caddy
  by hand          ``docker build`` of the same context (all layers cached), ``docker run`` of
                   the new container, first 200, ``docker rm -f`` of the old one

Each app commit carries a fresh body, so neither side reuses the other's COPY layer. The app
exits on SIGTERM (a trap in its shell), as a well-behaved app does. Issue 19's goal: both
ratios <= 1.2x. Each pair runs ``--runs`` times; the median of each side is reported.

    .venv/bin/python -m bench.deploy [--runs 2]
"""

from bench import common  # noqa: I001  (patches gevent first)

import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

import gevent  # noqa: E402

BENCH = "deploy"
PORT = 8080
DOCKERFILE = """\
FROM pulseup-test/appbase:latest
COPY index.html /www/index.html
EXPOSE 8080
CMD ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"]
"""
FIRST_200_TIMEOUT = 120.0
HAND_NETWORK = "bench-hand-net"     # with --bridge=none, -p publishes only on a user-defined network


# -- HTTP -----------------------------------------------------------------------------------

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def body(port, host=None):
    """(status, body) of GET / on 127.0.0.1:port; (None, error) when nothing answers."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": host} if host else {})
    try:
        with _NO_PROXY.open(request, timeout=2) as response:
            return response.status, response.read().decode(errors="replace").strip()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError as exc:
        return None, repr(exc)


def wait_200(port, expected, host=None, timeout=FIRST_200_TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        status, text = body(port, host)
        if status == 200 and text == expected:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"no 200 with {expected!r} on port {port} within {timeout:g}s: {status} {text!r}")
        gevent.sleep(0.01)


# -- the agent side -------------------------------------------------------------------------

class AgentSide:
    def __init__(self, lab, uid, git):
        self.lab, self.uid, self.git = lab, uid, git
        self.domain_added = set()

    def call(self, event, data, timeout=600):
        reply = self.lab.devserver.call(self.uid, event, data, timeout=timeout)
        if not reply["success"]:
            raise RuntimeError(f"{event} failed: {reply}")
        return reply["data"]

    def deploy(self, service_uid, deployment_uid, sha):
        return self.call("service.app.deploy", {
            "service_uid": service_uid, "deployment_uid": deployment_uid,
            "github_repo": f"{self.git.base_url}/{service_uid}.git", "access_token": self.git.token,
            "github_branch": "main", "commit_sha": sha, "internal_port": PORT, "drain_seconds": 0,
            "health_timeout_seconds": 60, "env_vars": {}})

    def serve(self, service_uid, domain, caddy_port, expected, deployment_uid, sha):
        """Seconds from the deploy call to the first 200 with ``expected`` through Caddy."""
        started = time.monotonic()
        self.deploy(service_uid, deployment_uid, sha)
        if service_uid not in self.domain_added:
            self.call("service.domain.manage", {"action": "add", "service_uid": service_uid, "domain": domain,
                                                "port": PORT, "force_https": False})
            self.domain_added.add(service_uid)
        wait_200(caddy_port, expected, host=domain)
        return time.monotonic() - started


# -- the by-hand side -----------------------------------------------------------------------

class HandSide:
    def __init__(self, daemon, git, work):
        self.env = git.clone_env(base={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": work,
                                       "DOCKER_HOST": daemon.host, "DOCKER_BUILDKIT": "0"})
        self.git, self.work = git, work
        self.docker = shutil.which("docker") or "docker"

    def run(self, *argv):
        subprocess.run(list(argv), env=self.env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=600)

    def start(self, tag, name):
        port = common.free_port()
        self.run(self.docker, "run", "-d", "--name", name, "--network", HAND_NETWORK,
                 "-p", f"127.0.0.1:{port}:{PORT}", tag)
        return port

    def deploy(self, name, sha, expected):
        """git clone + docker build + docker run + first 200; (seconds, context dir, port)."""
        context = os.path.join(self.work, f"{name}-{sha[:8]}")
        started = time.monotonic()
        self.run("git", "clone", "-q", f"{self.git.base_url}/{name}.git", context)
        self.run("git", "-C", context, "checkout", "-q", sha)
        self.run(self.docker, "build", "-q", "-t", f"bench-hand/{name}:1", context)
        port = self.start(f"bench-hand/{name}:1", f"{name}-1")
        wait_200(port, expected)
        return time.monotonic() - started, context

    def redeploy(self, name, context, expected, generation):
        """cached docker build + run of the new container + first 200 + removal of the old."""
        started = time.monotonic()
        self.run(self.docker, "build", "-q", "-t", f"bench-hand/{name}:{generation}", context)
        port = self.start(f"bench-hand/{name}:{generation}", f"{name}-{generation}")
        wait_200(port, expected)
        self.run(self.docker, "rm", "-f", f"{name}-{generation - 1}")
        return time.monotonic() - started


# -- the run --------------------------------------------------------------------------------

def one_round(index, agent, hand, git, caddy_port):
    """(agent deploy, hand deploy, agent redeploy, hand redeploy) seconds of one round."""
    figures = {}
    agent_uid, hand_uid = f"bench-app-{index}", f"bench-hand-{index}"
    agent_body, hand_body = f"agent app {index} {time.time_ns()}", f"hand app {index} {time.time_ns()}"
    _url, agent_sha = git.add_repo(agent_uid, {"Dockerfile": DOCKERFILE, "index.html": agent_body + "\n"})
    _url, hand_sha = git.add_repo(hand_uid, {"Dockerfile": DOCKERFILE, "index.html": hand_body + "\n"})
    figures["hand deploy"], context = hand.deploy(hand_uid, hand_sha, hand_body)
    domain = f"{agent_uid}.bench.test"
    figures["agent deploy"] = agent.serve(agent_uid, domain, caddy_port, agent_body, f"{agent_uid}-d1", agent_sha)
    figures["hand redeploy"] = hand.redeploy(hand_uid, context, hand_body, 2)
    figures["agent redeploy"] = agent.serve(agent_uid, domain, caddy_port, agent_body, f"{agent_uid}-d2", agent_sha)
    print(f"round {index}: " + ", ".join(f"{k} {v:.2f} s" for k, v in figures.items()), flush=True)
    return figures


def warm_up(agent, git, caddy_port):
    """One untimed deploy: starts the agent's Caddy container and loads the base image once."""
    _url, sha = git.add_repo("bench-warm", {"Dockerfile": DOCKERFILE, "index.html": "warm\n"})
    agent.serve("bench-warm", "bench-warm.bench.test", caddy_port, "warm", "bench-warm-d1", sha)


def start_services(work):
    harness = common.harness()
    import docker
    daemon = harness.DockerDaemon().start()
    git = None
    try:
        git = harness.GitServer().start()
        client = docker.DockerClient(base_url=daemon.host, timeout=300)
        harness.images.build_app_base_image(client)
        caddy_image = harness.images.build_caddy_image(client)
        client.networks.create(HAND_NETWORK, driver="bridge")
        client.close()
    except BaseException:
        if git is not None:
            git.stop()
        daemon.stop()
        raise
    return daemon, git, caddy_image


def measure(runs):
    work = common.tempfile.mkdtemp(prefix="pulseup-bench-deploy-")
    daemon, git, caddy_image = start_services(work)
    lab = None
    try:
        lab = common.Lab()
        caddy_port = common.free_port()
        _proc, uid = lab.start_worker(
            "deploy", docker_host=daemon.host, caddy_image=caddy_image, caddy_http_port=caddy_port,
            caddy_https_port=common.free_port(), caddy_tls_issuer="internal", allow_insecure_transport="true",
            pulseup_git_allowed_hosts=f"127.0.0.1:{git.port}", max_concurrent_commands=8,
            apps_dir=f"{lab.work}/apps", deployment_dir=f"{lab.work}/deployments",
            deployment_log_dir=f"{lab.work}/deployment-logs")
        print(f"worker files under {lab.work}", flush=True)
        agent, hand = AgentSide(lab, uid, git), HandSide(daemon, git, work)
        warm_up(agent, git, caddy_port)
        return [one_round(index, agent, hand, git, caddy_port) for index in range(runs)]
    finally:
        if lab is not None:
            lab.close()
        git.stop()
        daemon.stop()       # removes every container, the agent's Caddy included
        shutil.rmtree(work, ignore_errors=True)


def run(runs):
    rounds = measure(runs)
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    note = f"median of {runs}; private dockerd, git smart-HTTP, Caddy container; goal <= 1.2x"
    common.report(BENCH, "deploy, call -> 200 through Caddy", median["agent deploy"], "s",
                  median["hand deploy"], note=note + "; baseline: git clone + docker build + docker run + first 200")
    common.report(BENCH, "redeploy of the running commit", median["agent redeploy"], "s",
                  median["hand redeploy"], note=note + "; baseline: cached docker build + run + first 200 + rm old")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    return run(args.runs)


if __name__ == "__main__":
    sys.exit(main())
