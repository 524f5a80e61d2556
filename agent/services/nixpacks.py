"""The Nixpacks method of ``service.app.deploy`` (docs/commands.md, "Deployments").

``nixpacks`` must be on PATH, else ``failed_precondition`` naming what to install. The
detected plan (``nixpacks plan <dir> --format json``) is deep-merged with the request's
``nixpacks_config`` and commands; runtime defaults apply only where the plan pins no
version, and a pin below the recommended minimum is kept with a WARN line. Variables reach
Nixpacks through a temporary 0600 config file, never argv.

Where the plan names its provider (docs/support.md, "Nixpacks plan format"): ``nixpacks plan``
prints a *pinned* plan whose ``providers`` is an empty list (upstream
railwayapp/nixpacks src/nixpacks/plan/mod.rs, ``BuildPlan::pin``); the providers it matched
are recorded in ``variables.NIXPACKS_METADATA`` as one comma-separated list of each provider's
name followed by its labels, e.g. ``python,django,postgres`` (src/nixpacks/plan/generator.rs).
A non-empty ``providers`` can still come from the request's ``nixpacks_config``.

Use from the deploy pipeline::

    nix = NixpacksService(cfg)
    plan = nix.plan(source_dir, request["nixpacks_config"], commands, on_line)
    ctx.emit("update_nixpacks_config", {"service_uid": uid, "config": plan})  # first clone
    nix.build(source_dir, plan, [moving_tag, immutable_tag], env, on_line, ctx)
"""

import copy
import json
import os
import shutil
import tempfile

from agent.errors import AgentError
from agent.services.compose import child_environment, run_tool

INSTALL_HINT = ("nixpacks is not installed: install it (https://nixpacks.com/docs/install, "
                "e.g. the nixpacks .deb from its GitHub releases) or use the dockerfile method")

METADATA = "NIXPACKS_METADATA"
# entries of `providers` that mean "the detected ones" rather than naming a provider
AUTO_PROVIDERS = ("...", "@auto")

# provider -> (version variables, default, recommended minimum); docs/commands.md, "Deployments"
RUNTIMES = {
    "node": (("NIXPACKS_NODE_VERSION", "NODE_VERSION"), "22", "22"),
    "bun": (("NIXPACKS_BUN_VERSION",), "latest", "1.0"),
    "python": (("NIXPACKS_PYTHON_VERSION",), "3.12", "3.11"),
    "ruby": (("NIXPACKS_RUBY_VERSION",), "3.3", "3.2"),
    "go": (("NIXPACKS_GO_VERSION",), "1.22", "1.21"),
    "java": (("NIXPACKS_JDK_VERSION",), "21", "21"),
    "csharp": (("NIXPACKS_CSHARP_SDK_VERSION",), "8.0", "8.0"),
    "php": (("NIXPACKS_PHP_VERSION",), "8.3", "8.2"),
}


class NixpacksService:
    """Raises AgentError: ``failed_precondition`` (nixpacks missing), ``command_failed``
    (nixpacks exited non-zero or printed no plan), ``cancelled``/``deadline_exceeded``."""

    def __init__(self, cfg, search_path=None):
        self.cfg = cfg
        self.search_path = search_path

    def binary(self):
        """Absolute path of ``nixpacks``; failed_precondition naming what to install."""
        found = shutil.which("nixpacks", path=self.search_path)
        if found is None:
            raise AgentError("failed_precondition", INSTALL_HINT)
        return found

    def environment(self):
        return child_environment(DOCKER_HOST=self.cfg.docker_host)

    def detect(self, source_dir):
        """The plan Nixpacks detects for ``source_dir`` (a dict)."""
        out = run_tool([self.binary(), "plan", source_dir, "--format", "json"],
                       self.environment(), source_dir, what="nixpacks plan", capture=True)
        try:
            plan = json.loads(out)
        except ValueError as exc:
            raise AgentError("command_failed", f"nixpacks plan printed no JSON: {exc}") from exc
        if not isinstance(plan, dict):
            raise AgentError("command_failed", "nixpacks plan printed no JSON object")
        return plan

    def plan(self, source_dir, nixpacks_config=None, commands=None, on_line=None):
        """Detected plan + ``nixpacks_config`` + install/build/start commands + runtime
        defaults; version warnings go to ``on_line(text, "WARN")``."""
        plan = deep_merge(self.detect(source_dir), nixpacks_config or {})
        apply_commands(plan, commands or {})
        for warning in apply_runtime_defaults(plan):
            if on_line is not None:
                on_line(warning, "WARN")
        return plan

    def build(self, source_dir, plan, tags, env=None, on_line=None, ctx=None):
        """``nixpacks build`` tagged with every reference of ``tags``; ``env`` goes into the
        temporary config file's variables. Returns the first tag."""
        final = copy.deepcopy(plan)
        final.setdefault("variables", {}).update(env or {})
        workdir = tempfile.mkdtemp(prefix="pulseup-nixpacks-")  # 0700
        config_path = os.path.join(workdir, "nixpacks.json")
        try:
            fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(final, handle)
            argv = [self.binary(), "build", source_dir, "--config", config_path, "--name", tags[0]]
            for tag in tags[1:]:
                argv += ["--tag", tag]
            run_tool(argv, self.environment(), source_dir, what="nixpacks build",
                     on_line=on_line, ctx=ctx)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return tags[0]


def deep_merge(base, override):
    """``override`` merged into a copy of ``base``: dicts recursively, anything else replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def apply_commands(plan, commands):
    """install/build/start commands of the request (docs/commands.md, `service.app.deploy`) into the plan."""
    phases = plan.setdefault("phases", {})
    for key, phase in (("install_command", "install"), ("build_command", "build")):
        if commands.get(key):
            phases.setdefault(phase, {})["cmds"] = [commands[key]]
    if commands.get("start_command"):
        plan.setdefault("start", {})["cmd"] = commands["start_command"]


def apply_runtime_defaults(plan):
    """Set default runtime versions where none is pinned; returns warnings for low pins."""
    variables = plan.setdefault("variables", {})
    warnings = []
    for provider in plan_providers(plan):
        runtime = RUNTIMES.get(provider)
        if runtime is None:
            continue
        names, default, minimum = runtime
        pinned = next((variables[n] for n in names if variables.get(n)), None)
        if pinned is None:
            variables[names[0]] = default
        elif _below(str(pinned), minimum):
            warnings.append(f"{provider} {pinned} is below the recommended minimum {minimum}; "
                            "keeping the pinned version")
    return warnings


def plan_providers(plan):
    """Lower-case provider names of ``plan``: its explicit ``providers`` entries, then those
    recorded in ``variables.NIXPACKS_METADATA`` (labels such as ``django`` come along; they
    match no runtime). Non-string values are ignored: the plan comes from outside."""
    names = []
    explicit = plan.get("providers")
    for item in explicit if isinstance(explicit, list) else ():
        if isinstance(item, str) and item not in AUTO_PROVIDERS:
            names.append(item.strip().lower())
    variables = plan.get("variables")
    metadata = variables.get(METADATA) if isinstance(variables, dict) else None
    if isinstance(metadata, str):
        names += [item.strip().lower() for item in metadata.split(",")]
    return list(dict.fromkeys(name for name in names if name))


def _below(version, minimum):
    def parts(text):
        out = []
        for piece in text.lstrip("v").split("."):
            digits = "".join(ch for ch in piece if ch.isdigit())
            if not digits:
                break
            out.append(int(digits))
        return out
    have, want = parts(version), parts(minimum)
    return bool(have) and have < want
