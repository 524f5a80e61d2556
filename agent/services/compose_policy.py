"""The compose safety policy: an allow-list of keys, and every field that can reach the host checked.

docs/compose.md is the table of keys and the reasons. Two passes, both before anything runs:

* :func:`check_raw` on the files as written (after YAML anchors and merge keys, which
  ``yaml.safe_load`` resolves exactly as compose v1 does) *before* ``compose config`` reads any
  other file: the key allow-list, and the fields that the resolved document no longer shows
  (``env_file``, ``label_file``, ``extends.file``, ``include``), followed through ``extends``.
* :func:`check_resolved` on what ``compose config`` prints (interpolation, ``.env``, overrides
  and ``extends`` applied): the key allow-list again and every path, device, container and
  namespace field (agent/services/compose_fields.py).

Every refusal is ``failed_precondition`` naming the key. Host paths must resolve (symlinks
included) inside the clone and never to or under a ``.git`` directory.
"""

import os

from agent.services.compose_fields import Scope, check_name, check_sections, check_service, entries, mapping, refuse

ACCEPTED, CHECKED, REFUSED = "accepted", "checked", "refused"
MAX_FILE_BYTES = 1 << 20   # parsed in the worker's own process: a compose file is a few KiB

TOP_LEVEL = {
    "version": ACCEPTED, "name": ACCEPTED, "services": CHECKED, "networks": CHECKED,
    "volumes": CHECKED, "secrets": CHECKED, "configs": CHECKED, "include": CHECKED,
}

SERVICE = dict.fromkeys((
    "annotations", "attach", "cap_drop", "command", "cpu_count", "cpu_percent",
    "cpu_period", "cpu_quota", "cpu_rt_period", "cpu_rt_runtime", "cpu_shares", "cpus", "cpuset",
    "depends_on", "develop", "dns", "dns_opt", "dns_search", "domainname", "entrypoint",
    "environment", "expose", "extra_hosts", "group_add", "healthcheck", "hostname",
    "isolation", "labels", "mac_address", "mem_limit", "mem_reservation", "mem_swappiness",
    "memswap_limit", "oom_kill_disable", "oom_score_adj", "pids_limit", "platform",
    "ports", "profiles", "pull_policy", "read_only", "restart", "scale", "shm_size", "stdin_open",
    "stop_grace_period", "stop_signal", "storage_opt", "sysctls", "tmpfs", "tty", "ulimits", "user",
    "working_dir", "secrets", "configs",
), ACCEPTED)
SERVICE.update(dict.fromkeys((
    "build", "volumes", "volumes_from", "env_file", "label_file", "extends", "links", "network_mode",
    "pid", "ipc", "uts", "userns_mode", "cgroup", "security_opt", "logging", "blkio_config", "deploy",
    "post_start", "pre_stop", "runtime", "volume_driver", "privileged", "container_name", "networks",
    "init", "image",
), CHECKED))
SERVICE.update(dict.fromkeys((
    "cap_add", "cgroup_parent", "credential_spec", "device_cgroup_rules", "devices",
    "external_links", "gpus",
), REFUSED))


def check_top_level(document):
    for key in mapping("file", document):
        if str(key).startswith("x-"):
            continue
        if TOP_LEVEL.get(key) is None:
            refuse(f"top-level key {key!r}", "is not in the allowed list (docs/compose.md)")


def check_service_keys(name, service):
    for key, value in mapping(f"service {name}", service).items():
        if str(key).startswith("x-"):
            continue
        verdict = SERVICE.get(key)
        if verdict is None:
            refuse(f"service {name}", f"key {key!r} is not in the allowed list (docs/compose.md)")
        if verdict == REFUSED and value not in (None, False, "", [], {}):
            refuse(f"service {name}", f"{key!r} is not allowed")


def check_raw(files, root, project=""):
    """Check the compose files as written, before compose reads any other file. Follows
    ``extends.file`` and ``include`` (each file once). Raises failed_precondition."""
    import yaml

    queue, seen = [os.path.realpath(f) for f in files], set()
    while queue:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        scope = Scope(root, os.path.dirname(path), project, raw=True)
        try:
            with open(scope.path("file", path), encoding="utf-8") as handle:
                text = handle.read(MAX_FILE_BYTES + 1)
            if len(text) > MAX_FILE_BYTES:
                refuse(f"file {os.path.basename(path)}", "is larger than 1 MiB")
            document = yaml.safe_load(text)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            refuse(f"file {os.path.basename(path)}", f"cannot be read as YAML ({type(exc).__name__})")
        document = mapping(f"file {os.path.basename(path)}", document)
        check_top_level(document)
        queue.extend(_check_include(scope, document.get("include")))
        for name, service in mapping("services", document.get("services")).items():
            check_service_keys(name, service)
            queue.extend(_raw_service_files(scope, name, service or {}))


def _raw_service_files(scope, name, service):
    """Checks the fields compose reads files from while resolving; returns the extends file."""
    where = f"service {name}"
    if service.get("privileged") is True:
        refuse(f"{where} privileged", "is not allowed")
    for field in ("env_file", "label_file"):
        for entry in entries(service.get(field)):
            scope.path(f"{where} {field}", entry.get("path") if isinstance(entry, dict) else entry)
    extends = service.get("extends")
    if isinstance(extends, dict) and extends.get("file") is not None:
        return [scope.path(f"{where} extends.file", extends["file"])]
    return []


def _check_include(scope, include):
    """Every path of ``include`` in the clone; returns the compose files it names."""
    files = []
    for item in entries(include):
        item = item if isinstance(item, dict) else {"path": item}
        for key, value in item.items():
            if key not in ("path", "env_file", "project_directory"):
                refuse("include", f"key {key!r} is not allowed")
            for path in entries(value):
                if isinstance(path, str) and ("://" in path or path.startswith(("oci:", "git@"))):
                    refuse(f"include {key}", f"remote {path} is not allowed")
                resolved = scope.path(f"include {key}", path)
                if key == "path":
                    files.append(resolved)
    return files


def check_resolved(config, root, workdir=None, project=""):
    """Check the merged document that ``compose config`` printed. Raises failed_precondition."""
    document = mapping("file", config)
    services = mapping("services", document.get("services"))
    scope = Scope(root, workdir or root, project, services)
    check_top_level(document)
    _check_include(scope, document.get("include"))
    for name, service in sorted(services.items()):
        check_name(f"service {name}", name)
        check_service_keys(name, service)
        check_service(scope, name, service or {})
    check_sections(scope, document)
