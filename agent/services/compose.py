"""The Docker Compose method of ``service.app.deploy`` (docs/compose.md).

``docker compose`` (v2) when it answers, else Debian's ``docker-compose`` (v1, 1.29): v1 has
no ``--wait``, so after ``up -d`` the agent polls state and health through
the SDK. Safety is the allow-list of ``compose_policy`` (docs/compose.md), checked on the files
as written and on the merged configuration that ``compose config`` prints, unless
``PULSEUP_COMPOSE_ALLOW_PRIVILEGED``. Values the agent writes into its override file have their
``$`` escaped, so compose passes them on verbatim.

Use from the deploy pipeline::

    compose = ComposeService(cfg, services.docker)
    plan = compose.plan(service_uid, clone_dir, base_directory, options, needs_target=bool(ports))
    override = compose.write_override(plan, service_uid, deployment_uid, port_mappings, env)
    try:
        result = compose.up(plan, override, health_timeout, on_line, ctx)
    finally:
        os.unlink(override)
    ctx.services.proxy.switch(service_uid, result["upstream"], primary_internal_port)
"""

import collections
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field

import gevent

from agent import log, proc
from agent.errors import AgentError, invalid
from agent.services import compose_policy
from agent.services.docker import COMPOSE_PROJECT, DEPLOYMENT_UID, MANAGED, NETWORK, SERVICE_UID
from agent.services.docker import health_of, labels_of, state_of, translate

AUTO_OVERRIDES = ("docker-compose.override.yml", "docker-compose.override.yaml",
                  "compose.override.yml", "compose.override.yaml")
# Variables compose v1 reads from the environment *and* from the project's ``.env`` (the
# environment wins): pinned so that a ``.env`` in the repository cannot point compose at
# another engine, at TLS files, or at other compose files.
PINNED_ENV = {"DOCKER_TLS_VERIFY": "", "DOCKER_CERT_PATH": "", "DOCKER_CONTEXT": "",
              "COMPOSE_FILE": "", "COMPOSE_PROJECT_NAME": "", "COMPOSE_PARAMIKO_SSH": "0"}
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
CONFIG_TIMEOUT = 120   # `compose config` only reads files: a FIFO planted in the clone must not hang it
_log = log.get("compose")


@dataclass
class ComposePlan:
    project: str
    workdir: str                 # <clone>/<base_directory>
    files: list                  # compose file, then the automatic overrides present
    services: list               # names from `compose config`
    target: str = None           # service that gets ports and domains (None: no target)
    up_services: list = field(default_factory=list)   # empty: all services
    config: dict = field(default_factory=dict)        # merged configuration
    version: str = None          # the compose file's `version:` (v1 needs it in the override)
    root: str = None             # the clone (realpath), which bounds every host path
    service_uid: str = None      # the service the project belongs to

    @property
    def alias(self):
        """``<project>-<service>`` on pulseup-net: the target's upstream name."""
        return f"{self.project}-{self.target}" if self.target else None


def project_name(service_uid, requested=None):
    """docs/commands.md, "Docker names and labels": the requested name, else ``pulseup-<uid>``; lowercased, '.' -> '-'."""
    name = (requested or f"pulseup-{service_uid}").lower().replace(".", "-")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
        raise invalid("docker_compose_project_name", "must be letters, digits, '_' and '-'")
    return name


class ComposeService:
    """Raises AgentError: ``failed_precondition`` (no compose, unsafe file),
    ``invalid_argument`` (file outside the clone, service selection), ``command_failed``
    (compose exited non-zero), ``health_check_failed`` (services not ready in time)."""

    def __init__(self, cfg, docker):
        self.cfg = cfg
        self.docker = docker
        self._argv = None

    def environment(self):
        """A minimal environment without agent secrets, plus DOCKER_HOST and PINNED_ENV."""
        return child_environment(DOCKER_HOST=self.cfg.docker_host or DEFAULT_DOCKER_HOST, **PINNED_ENV)

    def command(self):
        """(argv prefix, major version); failed_precondition when neither compose exists."""
        if self._argv is None:
            for argv, version in ((["docker", "compose"], 2), (["docker-compose"], 1)):
                if _answers(argv + ["version"], self.environment()):
                    self._argv = (argv, version)
                    break
            else:
                raise AgentError("failed_precondition", "Docker Compose is not installed: install "
                                 "the docker compose plugin or the docker-compose package")
        return self._argv

    def plan(self, service_uid, clone_dir, base_directory="", compose_file="docker-compose.yml",
             project=None, selected=(), mode="all", needs_target=False):
        """Resolve files, list services, check the safety policy, pick the target service."""
        root = os.path.realpath(clone_dir)
        workdir = inside(root, os.path.join(root, base_directory or ""), "base_directory")
        main = inside(root, os.path.join(workdir, compose_file or "docker-compose.yml"),
                      "docker_compose_path")
        if not os.path.isfile(main):
            raise invalid("docker_compose_path", f"{compose_file} not found in the repository")
        base = os.path.splitext(os.path.basename(main))[0]
        names = [f"{base}.override.yml", f"{base}.override.yaml", *AUTO_OVERRIDES]
        files = [main] + [inside(root, os.path.join(os.path.dirname(main), n), "docker_compose_path")
                          for n in dict.fromkeys(names)
                          if os.path.lexists(os.path.join(os.path.dirname(main), n))]
        plan = ComposePlan(project_name(service_uid, project), workdir, files, [], root=root,
                           service_uid=service_uid)
        self.check_files(plan, root)
        plan.config = self._config(plan)
        plan.services = sorted((plan.config.get("services") or {}).keys())
        plan.version = _file_version(main)
        self.validate(plan.config, root, workdir=os.path.dirname(main), project=plan.project)
        selected = [selected] if isinstance(selected, str) else list(selected or ())
        _select(plan, selected, mode, needs_target)
        return plan

    def _config(self, plan):
        import yaml

        argv, _ = self.command()
        out = run_tool(argv + _file_args(plan) + ["config"], self.environment(), plan.workdir,
                       what="compose config", capture=True, timeout=CONFIG_TIMEOUT)
        try:
            config = yaml.safe_load(out) or {}
        except yaml.YAMLError as exc:
            raise AgentError("command_failed", f"compose config printed invalid YAML: {exc}") from exc
        return config if isinstance(config, dict) else {}

    def check_files(self, plan, root):
        """The policy on the files as written, before ``compose config`` reads any other
        file; the ``.env`` files compose reads must resolve inside the clone too."""
        if self.cfg.pulseup_compose_allow_privileged:
            return
        scope = compose_policy.Scope(root, plan.workdir)
        for directory in dict.fromkeys((plan.workdir, os.path.dirname(plan.files[0]))):
            if os.path.lexists(os.path.join(directory, ".env")):
                scope.path(".env", os.path.join(directory, ".env"))
        compose_policy.check_raw(plan.files, root, plan.project)

    def validate(self, config, clone_dir, workdir=None, project=""):
        """The policy (docs/compose.md) on a merged config; raises failed_precondition."""
        if self.cfg.pulseup_compose_allow_privileged:
            return
        compose_policy.check_resolved(config, clone_dir, workdir, project)

    def write_override(self, plan, service_uid, deployment_uid, port_mappings=(), env=None):
        """The agent's override file (0600, outside the repository); returns its path.
        The caller deletes it after :meth:`up`."""
        services = {}
        for name in plan.services:
            spec = plan.config["services"].get(name) or {}
            entry = {"labels": {MANAGED: "true", SERVICE_UID: escape(service_uid),
                                DEPLOYMENT_UID: escape(deployment_uid)}}
            if env:
                entry["environment"] = {k: escape(v) for k, v in env.items()}
            if "network_mode" not in spec:
                networks = {} if spec.get("networks") else {"default": None}
                networks[NETWORK] = {"aliases": [plan.alias]} if name == plan.target else None
                entry["networks"] = networks
            if name == plan.target:
                entry["ports"] = [f"{m['external']}:{m['internal']}" for m in port_mappings
                                  if m.get("external")]
            services[name] = entry
        document = {"services": services, "networks": {NETWORK: {"external": True}}}
        if plan.version:
            document = {"version": plan.version, **document}
        fd, path = tempfile.mkstemp(prefix=f"pulseup-compose-{plan.project}-", suffix=".yml")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:  # mkstemp creates it 0600
            json.dump(document, handle)  # JSON is YAML
        return path

    def up(self, plan, override, health_timeout, on_line, ctx=None):
        """Bring the project up and wait until it is ready; returns
        ``{project, container_name, upstream, containers}``. The policy runs again first: a
        running container with the clone mounted may have changed it since :meth:`plan`
        (the wait for a build slot can be long)."""
        argv, version = self.command()
        if plan.root and not self.cfg.pulseup_compose_allow_privileged:
            self.check_files(plan, plan.root)
            self.validate(self._config(plan), plan.root, os.path.dirname(plan.files[0]), plan.project)
        self._check_owner(plan)
        self.docker.ensure_network()
        args = argv + _file_args(plan) + ["-f", override, "up", "-d", "--build", "--remove-orphans"]
        if version == 2:
            args += ["--wait", "--wait-timeout", str(int(health_timeout))]
        run_tool(args + list(plan.up_services), self.environment(), plan.workdir,
                 what="compose up", on_line=on_line, ctx=ctx)
        containers = self.wait_ready(plan, health_timeout, ctx)
        return {"project": plan.project, "container_name": plan.project, "upstream": plan.alias,
                "containers": [c.name for c in containers]}

    def _check_owner(self, plan):
        """A requested project name may be another service's project: ``up --remove-orphans``
        would then replace or remove that service's containers."""
        if plan.service_uid is None:
            return
        for container in self.docker.list_containers([f"{COMPOSE_PROJECT}={plan.project}"]):
            if labels_of(container).get(SERVICE_UID) != plan.service_uid:
                raise AgentError("failed_precondition", f"compose project {plan.project} holds "
                                 f"{container.name}, which is not this service's: choose another "
                                 "docker_compose_project_name", field="service.docker_compose_project_name")

    def down(self, project, workdir=None, files=(), volumes=False):
        """``compose down --remove-orphans`` (``--volumes`` on request) for service.delete;
        returns the names of the project's containers. When the files or compose itself are
        gone, or the files no longer pass the policy (a refused commit stays in the clone, and
        ``down --volumes`` removes every volume its file names), the project's containers,
        networks and volumes go through the SDK, by the project's label, instead."""
        names = sorted(c.name for c in self.docker.list_containers([f"{COMPOSE_PROJECT}={project}"]))
        files = [f for f in files or () if os.path.isfile(f)]
        if files and workdir and os.path.isdir(workdir):
            try:
                self._check_down(project, workdir, files)
                argv, _ = self.command()
                args = argv + ["-p", project] + [a for f in files for a in ("-f", f)]
                run_tool(args + ["down", "--remove-orphans"] + (["--volumes"] if volumes else []),
                         self.environment(), workdir, what="compose down", timeout=300)
                return names
            except AgentError as exc:
                _log.warning("compose down of %s failed (%s); removing through Docker", project, exc.code)
        self._remove_project(project, volumes)
        return names

    def _check_down(self, project, workdir, files):
        """The policy on the files as they are now, the project's directory as the root."""
        if self.cfg.pulseup_compose_allow_privileged:
            return
        plan = ComposePlan(project, workdir, files, [])
        self.check_files(plan, workdir)
        self.validate(self._config(plan), workdir, os.path.dirname(files[0]), project)

    def _remove_project(self, project, volumes):
        label = {"label": [f"{COMPOSE_PROJECT}={project}"]}
        with translate(f"compose project {project}"):
            for container in self.docker.list_containers([f"{COMPOSE_PROJECT}={project}"]):
                container.remove(force=True)
            for network in self.docker.client.networks.list(filters=label):
                network.remove()
            for volume in self.docker.client.volumes.list(filters=label) if volumes else ():
                volume.remove(force=True)

    def wait_ready(self, plan, timeout, ctx=None):
        """Poll the project's containers until all run (and are healthy when they have a
        health check); raises health_check_failed on an exit, unhealthy, or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if ctx is not None:
                ctx.check()
            containers = self.docker.list_containers([f"{COMPOSE_PROJECT}={plan.project}"])
            states = {c.name: (state_of(c), health_of(c)) for c in containers}
            bad = {n: s for n, s in states.items() if s[0] in ("exited", "dead") or s[1] == "unhealthy"}
            if bad:
                raise AgentError("health_check_failed", f"compose services failed: {_describe(bad)}")
            if containers and all(s == ("running", "healthy") or s == ("running", "none")
                                  for s in states.values()):
                return containers
            if time.monotonic() >= deadline:
                raise AgentError("health_check_failed", "compose services not ready within "
                                 f"{timeout:g} s: {_describe(states) or 'no containers'}")
            gevent.sleep(1.0)


def escape(value):
    """``$`` doubled: compose interpolates every value of every file it reads, so
    ``a$b`` would arrive as ``a`` (issue 17 item 5); ``$$`` is its literal ``$``."""
    return value.replace("$", "$$") if isinstance(value, str) else value


def inside(root, path, field_name):
    """``path`` resolved (symlinks included); invalid_argument when it leaves ``root``."""
    resolved = os.path.realpath(path)
    if not _is_inside(root, resolved):
        raise invalid(field_name, "must resolve inside the repository")
    return resolved


def _is_inside(root, path):
    resolved = os.path.realpath(path)
    return resolved == root or resolved.startswith(root.rstrip("/") + "/")


def _select(plan, selected, mode, needs_target):
    unknown = [s for s in selected if s not in plan.services]
    if unknown:
        raise invalid("docker_compose_selected_services", f"unknown service {unknown[0]!r}")
    if len(selected) == 1:
        plan.target = selected[0]
    elif len(plan.services) == 1:
        plan.target = plan.services[0]
    elif needs_target:
        raise invalid("docker_compose_selected_services", "select exactly one service")
    if (mode or "all").lower() != "all" and selected:
        plan.up_services = list(selected)


def _file_args(plan):
    args = ["-p", plan.project]
    for path in plan.files:
        args += ["-f", path]
    return args


def _file_version(path):
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError):
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return str(version) if version is not None else None


def _answers(argv, env):
    try:
        run_tool(argv, env, None, what=argv[0], capture=True, timeout=20)
    except AgentError:
        return False
    return True


def _describe(states):
    return ", ".join(f"{n} {s[0]}" + (f"/{s[1]}" if s[1] != "none" else "")
                     for n, s in sorted(states.items()))


# -- running compose / nixpacks (shared with agent.services.nixpacks) -------------------

TAIL_BYTES = 4096


def child_environment(**extra):
    """PATH, LANG, HOME and the given values; never the agent's secrets (nor its own
    environment: a child of the worker must not inherit tokens or passwords). PATH is the
    worker's own: nixpacks and the docker CLI are looked up there (``shutil.which``), and the
    tools they start must be found in the same places."""
    return proc.environment(PATH=os.environ.get("PATH") or proc.CHILD_PATH, **extra)


def run_tool(argv, env, cwd, what, on_line=None, ctx=None, capture=False, timeout=None):
    """Run ``argv`` through :func:`agent.proc.stream`; hand its lines to
    ``on_line(text, level)``. Returns stdout when ``capture``. Raises failed_precondition
    (program missing), command_failed (non-zero exit, with exit_code and a redacted
    stderr_tail), deadline_exceeded (``timeout``); stops the group on cancellation."""
    tail, captured = collections.deque(maxlen=200), []

    def take(text, from_stderr):
        if capture and not from_stderr:
            captured.append(text)
            return
        line = text.rstrip("\n")
        tail.append(line)
        if on_line is not None:
            # stderr lines are errors unless they look like progress (docs/commands.md, "Deployments")
            on_line(line, "ERROR" if from_stderr and not _PROGRESS.match(line) else "INFO")
    try:
        code = proc.stream(argv, env, take, cwd=cwd, timeout=timeout, what=what,
                           on_cancel=None if ctx is None else ctx.on_cancel)
    except FileNotFoundError as exc:
        raise AgentError("failed_precondition", f"{argv[0]} is not installed") from exc
    if code != 0:
        text = log.redact("\n".join(tail))[-TAIL_BYTES:]
        raise AgentError("command_failed", f"{what} exited with code {code}",
                         exit_code=code, stderr_tail=text)
    return "".join(captured)


_PROGRESS = re.compile(r"^(Creating|Starting|Recreating|Building|Pulling|Step \d|Successfully|"
                       r"Network|Container|Image|#\d)")
