"""Choosing and preparing the build method of a deployment or install (docs/commands.md, "Deployments";
docs/compose.md).

The method is ``service.deployment_method`` when given; otherwise a file
``<base_directory>/<dockerfile_path>`` selects ``dockerfile``; otherwise the Nixpacks plan
selects ``nixpacks`` (and a missing ``nixpacks`` binary is ``failed_precondition`` naming what
to install). ``docker-compose`` is only ever chosen explicitly.
"""

import os
from dataclasses import dataclass

from agent.errors import AgentError
from agent.services.deploy import request as req

DOCKERFILE = "dockerfile"
NIXPACKS = "nixpacks"
COMPOSE = "docker-compose"
COMMAND_KEYS = ("install_command", "build_command", "start_command")


@dataclass
class Method:
    kind: str                       # dockerfile / nixpacks / docker-compose
    context_dir: str                # build context (dockerfile), source dir (nixpacks), workdir (compose)
    dockerfile: str = None          # dockerfile: path relative to context_dir
    nixpacks_plan: dict = None      # nixpacks: the plan sent in update_nixpacks_config


def choose(services, request, clone_path, on_line=None):
    """The :class:`Method` of this request for the checked-out ``clone_path``.

    Raises invalid_argument (paths leaving the clone), not_found (the Dockerfile of an explicit
    dockerfile method), failed_precondition (nixpacks missing), command_failed (nixpacks plan)."""
    service = request.get("service") or {}
    wanted = service.get("deployment_method")
    context_dir = req.resolve_inside(clone_path, request.get("base_directory") or "", "base_directory")
    if wanted == COMPOSE:
        return Method(COMPOSE, context_dir)
    name = service.get("dockerfile_path") or "Dockerfile"
    if wanted in (None, DOCKERFILE):
        dockerfile = find_dockerfile(clone_path, context_dir, name)
        if dockerfile is not None:
            return Method(DOCKERFILE, context_dir, dockerfile=dockerfile)
        if wanted == DOCKERFILE:
            raise AgentError("not_found", f"no {name} in the repository", field="service.dockerfile_path")
    try:
        services.nixpacks.binary()
    except AgentError as exc:
        prefix = "" if wanted == NIXPACKS else f"no {name} found and "
        raise AgentError(exc.code, prefix + exc.message) from None
    plan = services.nixpacks.plan(context_dir, request.get("nixpacks_config") or {}, commands(request), on_line)
    return Method(NIXPACKS, context_dir, nixpacks_plan=plan)


def find_dockerfile(clone_path, context_dir, name):
    """``name`` relative to ``context_dir`` when that file exists; only the clone bounds it
    (docs/commands.md, `service.app.deploy` ``dockerfile_path``). Raises invalid_argument when it leaves the clone."""
    relative = os.path.relpath(os.path.join(context_dir, name), os.path.realpath(clone_path))
    path = req.resolve_inside(clone_path, relative, "service.dockerfile_path")
    if not os.path.isfile(path):
        return None
    return os.path.relpath(path, context_dir)


def commands(request):
    """install/build/start commands: the ``service`` keys take precedence (docs/commands.md, `service.app.deploy`)."""
    service = request.get("service") or {}
    return {key: service.get(key) or request.get(key) for key in COMMAND_KEYS
            if service.get(key) or request.get(key)}


def compose_options(request):
    """The compose keys of ``service`` with their defaults (docs/commands.md, `service.app.deploy`)."""
    service = request.get("service") or {}
    return {"compose_file": service.get("docker_compose_path") or "docker-compose.yml",
            "project": service.get("docker_compose_project_name"),
            "selected": service.get("docker_compose_selected_services") or [],
            "mode": service.get("docker_compose_service_mode") or "all"}


def plan_compose(services, service_uid, request, method, clone_path, needs_target):
    """The ComposePlan (files, services, safety policy, target) of a compose method."""
    options = compose_options(request)
    base = os.path.relpath(method.context_dir, os.path.realpath(clone_path))
    return services.compose.plan(service_uid, clone_path, "" if base == "." else base, options["compose_file"],
                                 options["project"], options["selected"], options["mode"], needs_target)


def plan_record(method, source, repo_url, compose_plan=None):
    """What ``build_plan.json`` keeps (docs/commands.md, "Paths and files"): the method and how to build it."""
    record = {"build_method": method.kind, "repo_url": repo_url, "branch": source.get("branch"),
              "commit_sha": source["commit_sha"],
              "base_directory": os.path.relpath(method.context_dir, os.path.realpath(source["clone_path"]))}
    if method.kind == DOCKERFILE:
        record["dockerfile_path"] = method.dockerfile
    elif method.kind == NIXPACKS:
        record["nixpacks_plan"] = method.nixpacks_plan
    elif compose_plan is not None:
        record["compose"] = {"project": compose_plan.project, "files": compose_plan.files,
                             "workdir": compose_plan.workdir, "target": compose_plan.target}
    return record


def report_nixpacks(ctx, service_uid, method, source, stored_plan):
    """``update_nixpacks_config`` on the first clone of a Nixpacks service (docs/commands.md, "Deployments"): the
    work tree was cloned now, or no Nixpacks plan was stored for the service before."""
    if method.kind != NIXPACKS:
        return False
    if not source.get("fresh") and (stored_plan or {}).get("build_method") == NIXPACKS:
        return False
    ctx.emit("update_nixpacks_config", {"service_uid": service_uid, "config": method.nixpacks_plan})
    return True
