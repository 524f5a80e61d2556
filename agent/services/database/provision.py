"""``database.deploy``: provisioning of docs/commands.md, "Databases"

Volume ``pulseup-db-vol-<uid>`` -> host port -> image (never pulled with
``DB_IMAGE_PULL=never``) -> container ``pulseup-db-<uid>`` on ``pulseup-net`` -> start ->
authenticated readiness probe over TCP inside the container (docs/hosts.md, "Database containers": the local
socket answers during first-start initialisation, before the real server runs).
"""

import time
from dataclasses import dataclass
from typing import Optional

from agent import log
from agent.errors import AgentError
from agent.services.database import engines, ports
from agent.services.docker import NETWORK, image_present, sdk, translate
from agent.values import rfc3339
from agent.services.database.target import container_env, container_name, volume_name

READY_TIMEOUT = 120.0
PROBE_INTERVAL = 0.5
PORT_ATTEMPTS = 10
_BIND_FAILURES = ("port is already allocated", "address already in use", "bind for",
                  "programming external connectivity")
_log = log.get("database.provision")


@dataclass
class DeployRequest:
    service_uid: str
    type: str
    password: str
    port: Optional[int] = None
    username: Optional[str] = None
    database: Optional[str] = None
    deployment_uid: Optional[str] = None
    public: bool = False


def is_port_bind_failure(error):
    """Whether an AgentError from starting a container is Docker failing to bind a port."""
    text = error.message.lower()
    return any(s in text for s in _BIND_FAILURES)


def service_status(ctx, service_uid, status, message=None, error=None):
    data = {"service_uid": service_uid, "status": status, "timestamp": rfc3339(precision="ms")}
    if message:
        data["message"] = message
    if error:
        data["error"] = error
    ctx.emit("update_service_status", data)


def deploy(ctx, adapter, cfg, req):
    """Create (or find and start) the database container; the reply of database.deploy.

    Raises AgentError: conflict (name taken by another type, port taken),
    failed_precondition (image missing with DB_IMAGE_PULL=never), unavailable (docker,
    pull), health_check_failed (never ready), cancelled / deadline_exceeded.
    """
    engine = engines.get(req.type)
    req.deployment_uid = req.deployment_uid or f"dep_{time.time_ns()}"
    service_status(ctx, req.service_uid, "deploying", message=f"Deploying {engine.name} database")
    try:
        existing = adapter.inspect_container(container_name(req.service_uid))
        if existing is not None:
            result = _reuse(ctx, adapter, engine, req, existing)
        else:
            result = _create(ctx, adapter, cfg, engine, req)
    except AgentError as exc:
        service_status(ctx, req.service_uid, "failed", error=exc.message)
        raise
    service_status(ctx, req.service_uid, "running", message=f"{engine.name} database is ready")
    return result


def _create(ctx, adapter, cfg, engine, req):
    address = "0.0.0.0" if req.public else "127.0.0.1"
    username = req.username or engine.default_user
    database = req.database or engine.default_database
    adapter.ensure_network()
    with translate(f"create volume {volume_name(req.service_uid)}"):
        adapter.api.create_volume(volume_name(req.service_uid), labels={
            "pulseup.component": "database", "pulseup.type": "data", "pulseup.managed": "true",
            "pulseup.service_uid": req.service_uid})
    if req.port:
        ports.check_requested(adapter, address, req.port)
    image = _ensure_image(adapter, cfg, engine)
    port, container_id = _create_and_start(ctx, adapter, engine, req, image, address, username, database)
    wait_ready(ctx, adapter, engine, container_name(req.service_uid))
    return _reply(req, engine, container_id, port, address, username, database, already_exists=False)


def _ensure_image(adapter, cfg, engine):
    """The engine's image, pulled once when missing (unless DB_IMAGE_PULL=never)."""
    image = engine.image(cfg)
    if image_present(adapter.api, image):
        return image
    if cfg.db_image_pull == "never":
        raise AgentError("failed_precondition",
                         f"image {image} is not present and DB_IMAGE_PULL=never forbids pulling it")
    repository, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "latest")
    try:
        with translate(f"pull {image}"):
            adapter.api.pull(repository, tag=tag)
    except AgentError as exc:
        raise AgentError("unavailable", f"pulling {image} failed: {exc.message}") from exc
    return image


def _create_and_start(ctx, adapter, engine, req, image, address, username, database):
    """Create and start the container; with an automatic port, move on when Docker cannot bind."""
    tried = set()
    for _ in range(PORT_ATTEMPTS):
        ctx.check()
        port = req.port or next(ports.candidates(adapter, address, engine.port, skip=tried))
        container_id = _create_container(adapter, engine, req, image, address, port, username, database)
        try:
            with translate(f"start {container_name(req.service_uid)}"):
                adapter.api.start(container_id)
            return port, container_id
        except AgentError as exc:
            if req.port or not is_port_bind_failure(exc):
                raise
            _log.info("port %s was taken while starting, trying the next one", port)
            tried.add(port)
            with translate("remove container"):
                adapter.api.remove_container(container_id, force=True)
    raise AgentError("conflict", f"no free host port after {PORT_ATTEMPTS} attempts")


def _create_container(adapter, engine, req, image, address, port, username, database):
    api = adapter.api
    name = container_name(req.service_uid)
    labels = {"pulseup.managed": "true", "pulseup.service_uid": req.service_uid,
              "pulseup.deployment_uid": req.deployment_uid, "pulseup.database_type": engine.name,
              "pulseup.database_name": database}
    with translate(f"create container {name}"):
        host_config = api.create_host_config(
            binds={volume_name(req.service_uid): {"bind": engine.data_dir, "mode": "rw"}},
            port_bindings={engine.port: (address, port)},
            restart_policy={"Name": "unless-stopped"},
            log_config=sdk.bounded_logs())
        networking = api.create_networking_config({NETWORK: api.create_endpoint_config(aliases=[name])})
        created = api.create_container(
            image, name=name, command=engine.command, labels=labels, ports=[engine.port],
            environment=engine.env(username, req.password, database), detach=True,
            host_config=host_config, networking_config=networking)
    return created["Id"]


def wait_ready(ctx, adapter, engine, name):
    """Poll the authenticated probe until it passes; AgentError(health_check_failed) otherwise."""
    limit = READY_TIMEOUT if ctx.remaining() is None else min(READY_TIMEOUT, ctx.remaining())
    deadline = time.monotonic() + limit
    last = "no answer yet"
    while time.monotonic() < deadline:
        ctx.check()
        info = adapter.inspect_container(name) or {}
        state = info.get("State") or {}
        if not state.get("Running"):
            last = f"container is {state.get('Status', 'gone')} (exit code {state.get('ExitCode')})"
            if state.get("Status") in ("exited", "dead"):
                break
        else:
            code, out, err = adapter.run(name, engine.probe, timeout=30)
            if code == 0 and (not engine.probe_expect or engine.probe_expect in out.split()):
                return
            last = _last_line(err) or _last_line(out) or f"probe exited with {code}"
        time.sleep(PROBE_INTERVAL)
    raise AgentError("health_check_failed", f"database {name} did not become ready: {last}")


def _reuse(ctx, adapter, engine, req, info):
    """An existing container of the same type is started if needed and reported as is."""
    name = container_name(req.service_uid)
    labels = (info.get("Config") or {}).get("Labels") or {}
    if labels.get("pulseup.managed") != "true":
        raise AgentError("conflict", f"container {name} exists and is not managed by PulseUp")
    if labels.get("pulseup.database_type") != engine.name:
        raise AgentError("conflict", f"container {name} exists with database type "
                                     f"{labels.get('pulseup.database_type')!r}, not {engine.name!r}")
    if not (info.get("State") or {}).get("Running"):
        with translate(f"start {name}"):
            adapter.api.start(name)
    wait_ready(ctx, adapter, engine, name)
    env = container_env(info)
    address, port = _published(info, engine)
    req.deployment_uid = labels.get("pulseup.deployment_uid") or req.deployment_uid
    username = env.get(engine.user_env) or engine.default_user
    database = labels.get("pulseup.database_name") or env.get(engine.database_env) or engine.default_database
    return _reply(req, engine, info["Id"], port, address, username, database, already_exists=True)


def _published(info, engine):
    bindings = ((info.get("HostConfig") or {}).get("PortBindings") or {}).get(f"{engine.port}/tcp") or []
    for entry in bindings:
        if str(entry.get("HostPort") or "").isdigit():
            return entry.get("HostIp") or "0.0.0.0", int(entry["HostPort"])
    return "", 0


def _last_line(text):
    lines = (text or "").strip().splitlines()
    return log.redact(lines[-1][:300]) if lines else ""


def _reply(req, engine, container_id, port, address, username, database, already_exists):
    name = container_name(req.service_uid)
    details = {"container_id": container_id, "name": name, "port": port, "type": engine.name,
               "username": username, "database": database,
               "volume_path": volume_name(req.service_uid), "deployment_uid": req.deployment_uid}
    reply = {"status": "success",
             "message": f"{engine.name} database {'already exists' if already_exists else 'deployed'}",
             "details": dict(details)}
    reply.update(details)
    del reply["deployment_uid"]
    reply.update({"bind_address": address, "internal_host": name, "internal_port": engine.port,
                  "public": address == "0.0.0.0", "already_exists": already_exists})
    return reply
