"""The field checks of the compose policy (agent/services/compose_policy.py, docs/compose.md).

Each check gets the :class:`Scope` of the document, ``where`` (the key, for the message) and
the value, and refuses with ``failed_precondition`` through :func:`refuse`. Host paths go
through :meth:`Scope.path`: resolved with symlinks, inside the clone, never in ``.git``.
"""

import os

from agent.errors import AgentError
from agent.services.docker.labels import NETWORK

POLICY_ENV = "PULSEUP_COMPOSE_ALLOW_PRIVILEGED"
PROXY_NETWORK = NETWORK     # the agent's network, pulseup-net
MAX_MESSAGE = 400
RESERVED_PREFIX = "pulseup-"   # the agent's names on pulseup-net: pulseup-caddy, pulseup-db-<uid>...
BUILD_KEYS = {"context", "dockerfile", "dockerfile_inline", "args", "labels", "target", "shm_size",
              "extra_hosts", "isolation", "no_cache", "pull", "platforms", "tags", "ulimits",
              "secrets", "cache_from", "cache_to", "network", "additional_contexts", "ssh"}
VOLUME_KEYS = {"driver", "driver_opts", "external", "labels", "name"}
NETWORK_KEYS = {"driver", "external", "labels", "name", "ipam", "internal", "attachable", "enable_ipv6"}
FILE_OBJECT_KEYS = {"file", "environment", "content", "name", "labels"}
SAFE_SECURITY_OPTS = {"no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"}
LOG_DRIVERS = {"json-file", "local", "none", "journald"}
PRIVATE_PROPAGATION = {"private", "rprivate"}
BIND_OPTIONS = {"bind", "rbind", "ro", "rw", "nosuid", "nodev", "noexec"}
PROPAGATION_MODES = {"shared", "rshared", "slave", "rslave", "private", "rprivate"}
NAMESPACE_MODES = {  # key -> values accepted besides "service:<a service of this project>"
    "network_mode": {"", "bridge", "none", "default"},
    "pid": {""}, "ipc": {"", "private", "shareable", "none"}, "uts": {""}, "userns_mode": {""},
    "cgroup": {"", "private"},
}



def refuse(where, reason):
    """The one refusal of this policy: failed_precondition naming the key. Names and values
    come from the repository: control characters are escaped and the text is capped."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in f"{where}: {reason}")
    text = text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."
    raise AgentError("failed_precondition", f"compose {text} (set {POLICY_ENV}=true to allow)")


class Scope:
    """What a check needs: the clone, the directory relative paths start from, the project's
    name and its service names."""

    def __init__(self, root, base, project="", services=(), raw=False):
        self.root = os.path.realpath(root)
        self.base = base
        self.project = project
        self.services = set(services)
        self.raw = raw   # raw file text: interpolation still to come, so `$` is refused in paths

    def path(self, where, value, base=None):
        """The resolved path of ``value``; refused outside the clone or to/under ``.git``."""
        if not isinstance(value, str) or not value:
            refuse(where, "must be a path inside the repository")
        text = _literal(where, value, self.raw)
        resolved = os.path.realpath(os.path.join(base or self.base, os.path.expanduser(text)))
        if not (resolved == self.root or resolved.startswith(self.root.rstrip("/") + "/")):
            refuse(where, f"{text} is outside the repository")
        relative = os.path.relpath(resolved, self.root)
        if any(part.lower() == ".git" for part in relative.split(os.sep)):
            refuse(where, f"{text} is inside the repository's .git")
        return resolved

    def service(self, where, name):
        if name not in self.services:
            refuse(where, f"{name!r} is not a service of this project")


def _literal(where, text, raw):
    """``$$`` is compose's escaped ``$``; a lone ``$`` left in a path would be interpolated
    later by compose, so the path seen here would not be the path used."""
    if "$" in text.replace("$$", ""):
        refuse(where, f"{text} uses interpolation, which is not allowed here" if raw
               else f"{text} still holds an unresolved variable")
    return text.replace("$$", "$")


def mapping(where, value):
    if value is None:
        return {}
    if not isinstance(value, dict):
        refuse(where, "must be a mapping")
    return value


def entries(value):
    """A compose list-or-string field as a list."""
    if value is None:
        return []
    return [value] if isinstance(value, (str, dict)) else list(value)



# -- service fields -----------------------------------------------------------------------

def check_service(scope, name, service):
    """The checked keys of one service of the resolved document."""
    where = f"service {name}"
    for key, check in SERVICE_CHECKS.items():
        value = service.get(key)
        if value not in (None, "", [], {}):
            check(scope, f"{where} {key}", value)
    for key in NAMESPACE_MODES:
        _check_namespace(scope, f"{where} {key}", key, service.get(key))


def check_name(where, name):
    """Every service joins pulseup-net under its service name (and its container name): a
    name of the agent's there would take part of another service's traffic."""
    if str(name).lower().startswith(RESERVED_PREFIX):
        refuse(where, f"names starting with {RESERVED_PREFIX!r} are reserved for the agent")


def _check_container_name(scope, where, value):
    check_name(where, value)


def _check_networks(scope, where, value):
    """On pulseup-net the agent alone sets aliases and addresses."""
    if isinstance(value, dict) and value.get(PROXY_NETWORK):
        refuse(f"{where}.{PROXY_NETWORK}", "aliases and addresses on the agent's network are not allowed")


def _check_image(scope, where, value):
    """Not an image of another service: the agent's ``pulseup-app-<uid>`` images, or another
    compose project's ``pulseup-<uid>_<service>``. With ``build`` compose would also tag its
    build with that name, replacing the other service's image."""
    repository = _image_repository(str(value))
    own = {f"{scope.project}{sep}{name}" for name in scope.services for sep in "_-"}
    if repository == "pulseup-app" or repository.startswith("pulseup-app-") or (
            "_" in repository and repository.startswith(RESERVED_PREFIX) and repository not in own):
        refuse(where, f"{value} is the image of another service")


def _image_repository(reference):
    """``[registry/]path[:tag][@digest]`` -> path, lowercased (library/ dropped)."""
    name = reference.split("@", 1)[0].lower()
    head, sep, tail = name.rpartition("/")
    name = head + sep + tail.split(":", 1)[0]
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if len(parts) > 1 and parts[0] == "library":
        parts = parts[1:]
    return "/".join(parts)


def _check_init(scope, where, value):
    """A boolean; compose v1's code would take a string as the host path of the init binary."""
    if not isinstance(value, bool):
        refuse(where, "must be true or false")


def _check_privileged(scope, where, value):
    if value is not False:
        refuse(where, "is not allowed")


def _check_volumes(scope, where, volumes):
    for volume in entries(volumes):
        if isinstance(volume, dict):
            _check_long_volume(scope, where, volume)
        elif isinstance(volume, str):
            _check_short_volume(scope, where, volume)
        else:
            refuse(where, "each volume must be a string or a mapping")


def _check_short_volume(scope, where, volume):
    """``[source:]target[:mode]``; a source starting with ``/``, ``.`` or ``~`` is a host path
    (compose's rule), anything else a named volume of the project."""
    parts = volume.split(":")
    if len(parts) == 1:
        return
    source, modes = parts[0], parts[2].split(",") if len(parts) > 2 else []
    if source.startswith(("/", ".", "~")):
        scope.path(where, source)
    shared = [m for m in modes if m in PROPAGATION_MODES - PRIVATE_PROPAGATION]
    if shared:
        refuse(where, f"bind propagation {shared[0]!r} of {source} is not allowed")


def _check_long_volume(scope, where, volume):
    source = volume.get("source")
    kind = volume.get("type") or ("bind" if str(source or "").startswith(("/", ".", "~")) else "volume")
    if kind == "bind":
        scope.path(where, source)
        propagation = mapping(where, volume.get("bind")).get("propagation")
        if propagation not in (None, "", *PRIVATE_PROPAGATION):
            refuse(where, f"bind propagation {propagation!r} of {source} is not allowed")
    elif kind not in ("volume", "tmpfs"):
        refuse(where, f"volume type {kind!r} is not allowed")


def _check_volumes_from(scope, where, value):
    """``service[:mode]`` (v1 prints ``service:name:mode``); ``container:`` is refused."""
    for entry in entries(value):
        text = str(entry)
        if text.startswith("container:"):
            refuse(where, f"{text} names a container outside the project")
        scope.service(where, text.split(":")[1] if text.startswith("service:") else text.split(":")[0])


def _check_links(scope, where, value):
    for entry in entries(value):
        scope.service(where, str(entry).split(":")[0])


def _check_namespace(scope, where, key, value):
    text = "" if value is None else str(value)
    if text.startswith("service:"):
        scope.service(where, text.split(":", 1)[1])
    elif text not in NAMESPACE_MODES[key]:
        refuse(where, f"{text!r} is not allowed (only {', '.join(repr(v) for v in sorted(NAMESPACE_MODES[key]) if v)}"
               f"{', ' if len(NAMESPACE_MODES[key]) > 1 else ''}'service:<service of this project>')")


def _check_files(scope, where, value):
    for entry in entries(value):
        scope.path(where, entry.get("path") if isinstance(entry, dict) else entry)


def _check_extends(scope, where, value):
    if isinstance(value, dict) and value.get("file") is not None:
        scope.path(f"{where}.file", value["file"])


def _check_security_opt(scope, where, value):
    for entry in entries(value):
        if str(entry) not in SAFE_SECURITY_OPTS:
            refuse(where, f"{entry!r} is not allowed (only no-new-privileges)")


def _check_logging(scope, where, value):
    driver = mapping(where, value).get("driver")
    if driver not in (None, "", *LOG_DRIVERS):
        refuse(where, f"driver {driver!r} is not allowed (only {', '.join(sorted(LOG_DRIVERS))})")


def _check_blkio(scope, where, value):
    extra = sorted(set(mapping(where, value)) - {"weight"})
    if extra:
        refuse(where, f"{extra[0]!r} names a host device")


def _check_deploy(scope, where, value):
    reservations = mapping(where, mapping(where, mapping(where, value).get("resources")).get("reservations"))
    if reservations.get("devices"):
        refuse(f"{where}.resources.reservations.devices", "is not allowed")


def _check_hooks(scope, where, value):
    for hook in entries(value):
        if isinstance(hook, dict) and hook.get("privileged"):
            refuse(where, "a privileged hook is not allowed")


def _check_runtime(scope, where, value):
    if value != "runc":
        refuse(where, f"{value!r} is not allowed (only 'runc')")


def _check_volume_driver(scope, where, value):
    if value != "local":
        refuse(where, f"{value!r} is not allowed (only 'local')")


# -- build ----------------------------------------------------------------------------------

def _check_build(scope, where, build):
    build = {"context": build} if isinstance(build, str) else mapping(where, build)
    _only(where, build, BUILD_KEYS)
    context = build.get("context") or "."
    if _is_remote(context):
        refuse(f"{where}.context", f"remote context {context} is not allowed")
    context = scope.path(f"{where}.context", context)
    if build.get("dockerfile"):
        scope.path(f"{where}.dockerfile", build["dockerfile"], base=context)
    for name, value in _pairs(build.get("additional_contexts")):
        if not value.startswith(("docker-image://", "service:", "target:")):
            if _is_remote(value):
                refuse(f"{where}.additional_contexts", f"remote context {value} is not allowed")
            scope.path(f"{where}.additional_contexts.{name}", value, base=context)
    for name, value in _pairs(build.get("ssh"), default="default"):
        if value == "default":
            refuse(f"{where}.ssh", "forwarding the agent's SSH agent is not allowed")
        scope.path(f"{where}.ssh.{name}", value, base=context)
    for key in ("cache_from", "cache_to"):
        for entry in entries(build.get(key)):
            if "type=local" in str(entry).replace(" ", ""):
                refuse(f"{where}.{key}", f"{entry} reads or writes a host directory")
    network = build.get("network")
    if network not in (None, "", "default", "none"):
        refuse(f"{where}.network", f"{network!r} is not allowed (only 'default' or 'none')")


def _is_remote(value):
    return "://" in value or value.startswith(("git@", "github.com/"))


def _pairs(value, default=None):
    """``{name: value}`` or ``["name=value", ...]`` as (name, value) pairs of strings."""
    if isinstance(value, dict):
        return [(str(k), str(v if v is not None else default)) for k, v in value.items()]
    pairs = []
    for entry in entries(value):
        name, sep, item = str(entry).partition("=")
        pairs.append((name, item if sep else (default or name)))
    return pairs


SERVICE_CHECKS = {
    "build": _check_build, "volumes": _check_volumes, "volumes_from": _check_volumes_from,
    "links": _check_links, "env_file": _check_files, "label_file": _check_files,
    "extends": _check_extends, "security_opt": _check_security_opt, "logging": _check_logging,
    "blkio_config": _check_blkio, "deploy": _check_deploy, "post_start": _check_hooks,
    "pre_stop": _check_hooks, "runtime": _check_runtime, "volume_driver": _check_volume_driver,
    "privileged": _check_privileged, "container_name": _check_container_name, "networks": _check_networks,
    "init": _check_init, "image": _check_image,
}


# -- top-level sections -------------------------------------------------------------------

def check_sections(scope, document):
    for name, volume in sorted(mapping("volumes", document.get("volumes")).items()):
        _check_volume(scope, f"volume {name}", name, mapping(f"volume {name}", volume))
    for name, network in sorted(mapping("networks", document.get("networks")).items()):
        _check_network(scope, f"network {name}", name, mapping(f"network {name}", network))
    for section in ("secrets", "configs"):
        for name, item in sorted(mapping(section, document.get(section)).items()):
            _check_file_object(scope, f"{section}.{name}", mapping(f"{section}.{name}", item))


def _check_volume(scope, where, name, volume):
    _only(where, volume, VOLUME_KEYS)
    if volume.get("external"):
        refuse(where, "an external volume belongs to something else on this host")
    _own_name(scope, where, name, volume.get("name"))
    if volume.get("driver") not in (None, "", "local"):
        refuse(where, f"driver {volume['driver']!r} is not allowed (only 'local')")
    opts = mapping(f"{where} driver_opts", volume.get("driver_opts"))
    kind, device = opts.get("type"), opts.get("device")
    if not opts or kind == "tmpfs":
        return
    options = set(str(opts.get("o", "")).split(","))
    if kind != "none" or not options & {"bind", "rbind"} or not options <= BIND_OPTIONS:
        refuse(f"{where} driver_opts", f"type {kind!r} with o={opts.get('o')!r} is not allowed "
               "(only a plain bind or tmpfs)")
    if not str(device or "").startswith("/"):
        refuse(f"{where} driver_opts", f"volume device {device} must be an absolute path")
    try:
        scope.path(f"{where} driver_opts", device)
    except AgentError:
        refuse(f"{where} driver_opts", f"volume device {device} is outside the repository or in .git")


def _check_network(scope, where, name, network):
    _only(where, network, NETWORK_KEYS)
    external = network.get("external")
    if external:
        named = external.get("name") if isinstance(external, dict) else None
        if (named or network.get("name") or name) != PROXY_NETWORK:
            refuse(where, f"an external network other than {PROXY_NETWORK} reaches other containers")
        return
    _own_name(scope, where, name, network.get("name"))
    if network.get("driver") not in (None, "", "bridge"):
        refuse(where, f"driver {network['driver']!r} is not allowed (only 'bridge')")


def _check_file_object(scope, where, item):
    _only(where, item, FILE_OBJECT_KEYS)
    if item.get("file") is not None:
        scope.path(f"{where} file", item["file"])


def _only(where, item, allowed):
    unknown = sorted(k for k in set(item) - allowed if not str(k).startswith("x-"))
    if unknown:
        refuse(where, f"key {unknown[0]!r} is not allowed")


def _own_name(scope, where, name, explicit):
    """An explicit ``name`` may only repeat the one compose gives anyway (``<project>_<key>``):
    any other could be the volume or network of another project on this host."""
    if explicit not in (None, "") and explicit != f"{scope.project}_{name}":
        refuse(where, f"name {explicit!r} is not this project's own ({scope.project}_{name})")
