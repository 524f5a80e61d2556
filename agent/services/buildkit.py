"""BuildKit builds through the docker CLI (issue 18; docs/support.md, "Builds").

The SDK speaks only the classic builder's ``POST /build``; BuildKit needs the CLI's session
(cache mounts, parallel stages, ``RUN --mount``). Two kinds of CLI can drive it:

- one with the ``buildx`` plugin (``docker buildx version`` answers): ``docker build`` is
  buildx underneath;
- a 18.09-22.x client without buildx: it carries its own BuildKit client, switched on by
  ``DOCKER_BUILDKIT=1`` (Debian's docker.io 20.10 is one).

A 23+ client without buildx refuses with "BuildKit is enabled but the buildx component is
missing", so every ``docker`` on PATH is probed and the first capable one is used. The
engine must speak API 1.39 (Docker 18.09, the first with BuildKit). Otherwise, or with
``DOCKER_FORCE_LEGACY_BUILDS=true``, the caller uses the classic builder.

Build-argument values reach the CLI through its environment (``--build-arg NAME`` without a
value reads ``$NAME``), never its argv; names the CLI itself reads from its environment are
refused here and left to the classic builder, which carries them inside the API request.
On an engine without the default ``bridge`` network (``dockerd --bridge=none``) the classic
builder runs ``RUN`` steps with only a loopback interface; BuildKit's default would fail
with "network bridge not found", so it gets ``--network none``, the same isolation.
"""

import os
import re
import shutil
import tempfile

from agent import log, proc
from agent.errors import AgentError
from agent.services.compose import child_environment, run_tool
from agent.services.docker import translate

_log = log.get("build")
MIN_API = (1, 39)
BUILTIN_CLIENT_BELOW = 23      # clients from 23.0 need the buildx plugin for BuildKit
PROBE_TIMEOUT = 20.0
# the CLI's own environment: a build arg of that name must not reach it as a variable
RESERVED_NAME = re.compile(r"^(PATH|HOME|LANG|LC_[A-Z]+|TMPDIR|DOCKER_[A-Z0-9_]*|BUILDKIT_[A-Z0-9_]*|"
                           r"BUILDX_[A-Z0-9_]*|SSL_CERT_[A-Z_]*|HTTPS?_PROXY|NO_PROXY|http_proxy|"
                           r"https_proxy|no_proxy)\Z")


def docker_clis(search_path=None):
    """Every executable ``docker`` on ``search_path`` (PATH when None), first first, one per
    real file."""
    found, seen = [], set()
    for folder in (search_path or os.environ.get("PATH", "")).split(os.pathsep):
        candidate = shutil.which("docker", path=folder) if folder else None
        if candidate and os.path.realpath(candidate) not in seen:
            seen.add(os.path.realpath(candidate))
            found.append(candidate)
    return found


def _skip_blank(on_line):
    """The plain progress separates steps with empty lines: not worth a log line each."""
    def forward(text, level):
        if text.strip():
            on_line(text, level)
    return forward


def _major(version):
    match = re.match(r"^\s*v?(\d+)\.", version or "")
    return int(match.group(1)) if match else None


class BuildKit:
    """Chooses and runs a BuildKit-capable docker CLI. ``reason_unavailable()`` says why the
    classic builder must be used (None: BuildKit is usable); ``build`` raises command_failed
    (with ``stderr_tail``), deadline_exceeded, cancelled."""

    def __init__(self, cfg, docker, search_path=None, probe=None):
        self.cfg = cfg
        self.docker = docker
        self.search_path = search_path
        self._probe = probe or self._run_probe
        self._cli = None           # (path, kind) once found; probes are not repeated

    def environment(self, **extra):
        return child_environment(DOCKER_HOST=self.cfg.docker_host, **extra)

    def reason_unavailable(self):
        if self.cfg.docker_force_legacy_builds:
            return "DOCKER_FORCE_LEGACY_BUILDS=true"
        with translate("docker version"):
            api = self.docker.api.version().get("ApiVersion", "0.0")
        if tuple(int(p) for p in re.findall(r"\d+", api)[:2]) < MIN_API:
            return f"the engine speaks API {api}, BuildKit needs {MIN_API[0]}.{MIN_API[1]}"
        if self.cli() is None:
            return "no docker CLI with BuildKit on PATH (a buildx plugin or a client older than 23.0)"
        return None

    def cli(self):
        """(path, "buildx" | "builtin") of the first capable CLI, or None."""
        if self._cli is None:
            for path in docker_clis(self.search_path):
                kind = self._capability(path)
                if kind:
                    self._cli = (path, kind)
                    _log.info("BuildKit builds use %s (%s)", path, kind)
                    break
        return self._cli

    def _capability(self, path):
        if self._probe([path, "buildx", "version"]) is not None:
            return "buildx"
        major = _major(self._probe([path, "version", "--format", "{{.Client.Version}}"]))
        return "builtin" if major is not None and major < BUILTIN_CLIENT_BELOW else None

    def _run_probe(self, argv):
        """stdout of ``argv`` when it exits 0, else None (no shell, minimal env)."""
        try:
            done = proc.run(argv, self.environment(), timeout=PROBE_TIMEOUT)
        except (OSError, AgentError):     # missing program, deadline_exceeded
            return None
        return done.stdout if done.exit_code == 0 else None

    def usable_args(self, build_args):
        """False when a build-arg name would collide with the CLI's own environment."""
        return not any(RESERVED_NAME.match(name) for name in build_args)

    def argv(self, context_dir, dockerfile, tags, build_args, iidfile):
        """The CLI's argv: names of build args only, their values go in the environment."""
        path, _ = self.cli()
        argv = [path, "build", "--progress", "plain", "--iidfile", iidfile,
                "--file", os.path.join(context_dir, dockerfile)]
        for tag in tags:
            argv += ["--tag", tag]
        for name in sorted(build_args):
            argv += ["--build-arg", name]
        if not self._has_bridge():
            argv += ["--network", "none"]
        return argv + [context_dir]

    def _has_bridge(self):
        with translate("list networks"):
            return any(n.name == "bridge" for n in self.docker.client.networks.list(names=["bridge"]))

    def build(self, context_dir, dockerfile, tags, build_args, on_line, ctx=None):
        """Build with BuildKit; ``on_line(text, level)`` gets the plain progress. The image id."""
        workdir = tempfile.mkdtemp(prefix="pulseup-buildkit-")     # 0700
        iidfile = os.path.join(workdir, "iid")
        try:
            argv = self.argv(context_dir, dockerfile, tags, build_args, iidfile)
            env = self.environment(DOCKER_BUILDKIT="1", **build_args)
            timeout = ctx.remaining() if ctx is not None else None
            run_tool(argv, env, context_dir, what="docker build (BuildKit)", on_line=_skip_blank(on_line),
                     ctx=ctx, timeout=timeout)
            try:
                with open(iidfile, encoding="ascii", errors="replace") as handle:
                    image_id = handle.read().strip()
            except OSError:
                image_id = ""
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if not re.match(r"^sha256:[0-9a-f]{64}\Z", image_id):
            raise AgentError("command_failed", "docker build (BuildKit) finished without an image id", exit_code=1)
        return image_id
