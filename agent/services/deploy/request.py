"""Resolving what a deployment needs from its request and the control plane (docs/commands.md, `service.app.deploy` and "Agent -> server calls").

Pure functions over already-validated request dicts, plus the two agent -> server calls:
``get_github_repo`` (repository and token when the request has no ``github_repo`` key) and
``get_service_env_vars`` (environment when the request has no ``env_vars`` key).
"""

import os

from agent.errors import AgentError, invalid

MAX_MAPPINGS = 32
DOCKERFILE_HINT = "dockerfile"
SKIP_DIRS = {".git", "node_modules", "dist", ".cache", "__pycache__"}
MAX_DOCKERFILE_PATHS = 100


def dedupe_mappings(mappings):
    """Drop duplicates (same ``external`` > 0, or same ``internal`` with ``external`` 0); <= 32."""
    seen_external, seen_internal, result = set(), set(), []
    for mapping in mappings:
        external, internal = mapping["external"], mapping["internal"]
        if external > 0 and external in seen_external or external == 0 and internal in seen_internal:
            continue
        (seen_external.add(external) if external > 0 else seen_internal.add(internal))
        result.append({"external": external, "internal": internal})
    if len(result) > MAX_MAPPINGS:
        raise invalid("port_mappings", f"at most {MAX_MAPPINGS} entries")
    return result


def port_mappings(request):
    """The request's mappings, else ``service.port_mappings``, else internal/exposed ports."""
    service = request.get("service") or {}
    for mappings in (request.get("port_mappings"), service.get("port_mappings")):
        if mappings:
            return dedupe_mappings(mappings)
    internal = request.get("internal_port") or service.get("internal_port") or 0
    exposed = request.get("exposed_port") or service.get("exposed_port") or 0
    if internal > 0:
        return [{"external": exposed, "internal": internal}]
    return []


def resolve_inside(root, relative, field):
    """``root/relative`` with symlinks resolved; invalid_argument when it leaves ``root``."""
    if os.path.isabs(relative or ""):
        raise invalid(field, "must be a relative path")
    real_root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(real_root, relative or ""))
    if path != real_root and not path.startswith(real_root + os.sep):
        raise invalid(field, "must stay inside the repository")
    return path


def dockerfile_paths(root):
    """Relative paths of files whose name contains ``dockerfile`` (docs/commands.md, "Deployments").

    A name that is not UTF-8 (Python reads it as lone surrogates) cannot travel in a frame
    nor be chosen by the control plane: it is skipped (docs/protocol.md, "Strings").
    """
    found = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and _utf8(d))
        for name in sorted(files):
            if DOCKERFILE_HINT in name.lower() and _utf8(name):
                found.append(os.path.relpath(os.path.join(directory, name), root))
                if len(found) >= MAX_DOCKERFILE_PATHS:
                    return found
    return found


def _utf8(name):
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def resolve_repo(ctx, request, normalize):
    """(clone URL, token) from the request or ``get_github_repo``; the request's token wins."""
    token = request.get("access_token") or None
    if request.get("github_repo") is not None:
        return request["github_repo"], token
    reply = _call(ctx, "get_github_repo", {"service_uid": request["service_uid"]})
    if "error" in reply and not reply.get("repo_url"):
        raise AgentError("unavailable", f"call failed: get_github_repo: {reply['error']}")
    repo_url = reply.get("repo_url")
    if not isinstance(repo_url, str) or not repo_url:
        raise AgentError("unavailable", "call failed: get_github_repo: no repo_url in the reply")
    server_token = reply.get("access_token")
    if token is None and isinstance(server_token, str) and server_token:
        token = server_token
    return normalize(repo_url), token


def resolve_env(ctx, request):
    """The env vars from the request (an explicit ``{}`` means none) or ``get_service_env_vars``."""
    if request.get("env_vars") is not None:
        return dict(request["env_vars"])
    return fetch_env(ctx, request["service_uid"])


def fetch_env(ctx, service_uid):
    """``get_service_env_vars`` (docs/commands.md, "Agent -> server calls"): strings kept, numbers/booleans converted,
    nulls skipped; objects, arrays or an ``error``-only reply -> unavailable."""
    reply = _call(ctx, "get_service_env_vars", {"service_uid": service_uid})
    if set(reply) == {"error"}:
        raise AgentError("unavailable", f"call failed: get_service_env_vars: {reply['error']}")
    values = reply["env_vars"] if isinstance(reply.get("env_vars"), dict) else reply
    env = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            value = str(value)
        elif not isinstance(value, str):
            raise AgentError("unavailable", f"call failed: get_service_env_vars: {key} is not a string")
        env[str(key)] = value
    return env


def _call(ctx, event, data):
    try:
        reply = ctx.call_server(event, data, 30.0)
    except AgentError as exc:
        if exc.code in ("cancelled", "deadline_exceeded"):
            raise
        raise AgentError("unavailable", f"call failed: {event}: {exc.message}") from exc
    if not isinstance(reply, dict):
        raise AgentError("unavailable", f"call failed: {event}: the reply is not an object")
    return reply
