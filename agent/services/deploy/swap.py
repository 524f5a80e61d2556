"""Creating the new app container and swapping it in (docs/commands.md, "Docker names and labels" and "Deployments").

``blue_green`` (nothing published on the host): candidate started next to the active
container -> gate -> rename -> switch traffic -> drain -> stop and remove the previous one.
``single_slot`` (a mapping publishes a host port, which cannot be shared): candidate created
unstarted -> previous stopped (kept) -> candidate started -> gate -> rename -> switch ->
previous removed; on failure the previous one is started again. Containers the agent stops
are marked expected so the event watcher does not report an outage.
"""

import json
import socket
import time
from dataclasses import dataclass, field

import gevent

from agent.errors import AgentError
from agent.services.docker import sdk
from agent.services.docker import (CANDIDATE_SUFFIX, COMMIT_SHA, DEPLOYMENT_UID, MANAGED, NETWORK, SERVICE_UID,
                                   VERSION, state_of, translate, version_of)
from agent.services.deploy.gate import ReadinessGate

FINAL_NAME = "pulseup.lifecycle.final_name"
RESTORE_WAIT = 30.0


@dataclass
class Release:
    """What to run: one image with its environment, ports, limits and gate settings."""
    service_uid: str
    deployment_uid: str
    image: str
    commit_sha: str = ""
    env: dict = field(default_factory=dict)
    port_mappings: list = field(default_factory=list)
    cpu_limit: float = None
    memory_limit: int = None
    health_check_path: str = None
    health_timeout: float = 120.0
    drain_seconds: float = 5.0
    force: bool = False

    @property
    def primary(self):
        return self.port_mappings[0] if self.port_mappings else None

    @property
    def swap_mode(self):
        return "single_slot" if any(m["external"] > 0 for m in self.port_mappings) else "blue_green"


def container_name(service_uid, version, candidate=False):
    """docs/commands.md, "Docker names and labels": ``pulseup-app-<uid>-v<NNNN>`` (4 digits, unpadded above 9999)."""
    return f"pulseup-app-{service_uid}-v{version:04d}" + (CANDIDATE_SUFFIX if candidate else "")


def container_env(env, port_mappings):
    """The container's env: reserved keys (``PORT``, ``PULSEUP_*``) recomputed (docs/commands.md, "Deployments");
    ``PULSEUP_PORT_MAPPINGS`` is consumed by the agent and not passed on."""
    result = {k: v for k, v in env.items() if k != "PORT" and not k.startswith("PULSEUP_")}
    if port_mappings:
        result["PORT"] = str(port_mappings[0]["internal"])
        result["PULSEUP_PRIMARY_EXTERNAL_PORT"] = str(port_mappings[0]["external"])
    return result


def mappings_env(port_mappings):
    return json.dumps(port_mappings, separators=(",", ":"))


class Swap:
    """One gated swap. ``run()`` returns the result dict; raises health_check_failed, the
    traffic switch's error, unavailable, cancelled, deadline_exceeded."""

    stop_grace = 30          # seconds before SIGKILL (docs/commands.md, "Deployments"); a class attribute so tests can shrink it

    def __init__(self, services, release, steps, ctx=None, progress=None, journal=None):
        self.services = services
        self.journal = journal      # agent.services.interrupted.PhaseLog, or None
        self.docker = services.docker
        self.release = release
        self.steps = steps
        self.ctx = ctx
        self.progress = progress or (lambda phase, message: None)
        self.version = None
        self.previous = None
        self.container = None
        self._previous_stopped = False

    def say(self, step_id, text, level="INFO"):
        self.steps.log(step_id, text, level)

    def run(self):
        uid = self.release.service_uid
        self.docker.ensure_network()
        containers = self.docker.find_service_containers(uid)
        self._remove_stale_candidates(containers)
        self.previous = self.docker.active_container(uid, containers)
        self.version = max([version_of(c) for c in containers] + [0]) + 1
        primary = self.release.primary
        self._mark("deploy_container", swap_mode=self.release.swap_mode, version=self.version,
                   candidate=container_name(uid, self.version, candidate=True),
                   final=container_name(uid, self.version), port=primary["internal"] if primary else None,
                   previous=self.previous.name if self.previous is not None else None,
                   previous_id=self.previous.id if self.previous is not None else None)
        if self.release.swap_mode == "single_slot":
            self._check_ports(containers)
            self._single_slot()
        else:
            self._blue_green()
        return self._result()

    # -- the two modes ------------------------------------------------------------------

    def _blue_green(self):
        try:
            self._create(start=True)
            self._mark("health_check")
            self._gate()
            self._promote()
        except BaseException:
            self._discard()
            raise
        self._cleanup(drain=True)
        self._mark("done")

    def _single_slot(self):
        try:
            self._create(start=False)
            self._mark("stop_previous")
            self._stop_previous("deploy_container")
            with translate(f"start {self.container.name}"):
                self.container.start()
            self._mark("health_check")
            self._gate()
            self._promote()
        except BaseException as exc:
            self._discard()
            if self._previous_stopped:
                restored = self._restore_previous()
                if isinstance(exc, AgentError):
                    exc.message += "; previous version restored" if restored else "; previous version NOT restored"
                    exc.args = (exc.message,)
            raise
        self._cleanup(drain=False)
        self._mark("done")

    def _mark(self, phase, **fields):
        """Durable phase record for restart recovery (docs/operations.md "Restart recovery")."""
        if self.journal is not None:
            self.journal.phase(phase, **fields)

    # -- steps --------------------------------------------------------------------------

    def _create(self, start):
        self.progress("deploy", "creating the new container")
        name = container_name(self.release.service_uid, self.version, candidate=True)
        self.steps.start("deploy_container", f"Create {name}", log_type="deploy")
        self.say("deploy_container", f"creating {name} from {self.release.image} ({self.release.swap_mode})")
        with translate(f"create {name}"):
            self.container = self.docker.client.containers.create(self.release.image, name=name,
                                                                  **self._create_options())
            if self.journal is not None:
                self.journal.update(candidate_id=self.container.id)
            if start:
                self.container.start()
        self.steps.finish("deploy_container", metadata=self._metadata())

    def _create_options(self):
        release = self.release
        options = dict(
            environment=container_env(release.env, release.port_mappings), labels=self._labels(),
            network=NETWORK, restart_policy={"Name": "unless-stopped"}, detach=True,
            log_config=sdk.bounded_logs())
        ports = {}
        for mapping in release.port_mappings:
            if mapping["external"] > 0:
                ports.setdefault(f"{mapping['internal']}/tcp", []).append(mapping["external"])
        if ports:
            options["ports"] = ports
        if release.cpu_limit:
            options["nano_cpus"] = int(release.cpu_limit * 1e9)
        if release.memory_limit:
            options["mem_limit"] = int(release.memory_limit)
        return options

    def _labels(self):
        return {MANAGED: "true", SERVICE_UID: self.release.service_uid,
                DEPLOYMENT_UID: self.release.deployment_uid, VERSION: str(self.version),
                FINAL_NAME: container_name(self.release.service_uid, self.version),
                COMMIT_SHA: self.release.commit_sha or ""}

    def _gate(self):
        self.progress("health_check", "waiting for the readiness gate")
        self.steps.start("health_check", "Readiness gate", log_type="deploy")
        primary = self.release.primary
        gate = ReadinessGate(self.container, primary["internal"] if primary else None,
                             self.release.health_check_path, self.release.health_timeout,
                             lambda text, level="INFO": self.say("health_check", text, level))
        try:
            gate.wait(self.ctx)
        except AgentError as exc:
            self.steps.finish("health_check", "error", exc.message)
            raise
        self.steps.finish("health_check")

    def _promote(self):
        """Rename the candidate and switch traffic: the point of no return (docs/commands.md, "Deployments")."""
        final = container_name(self.release.service_uid, self.version)
        if self.ctx is not None:
            self.ctx.check()
            self.ctx.point_of_no_return()
        self._mark("switch_traffic")
        self.progress("switch_traffic", f"switching traffic to {final}")
        self.steps.start("switch_traffic", f"Switch traffic to {final}", log_type="deploy")
        with translate(f"rename {self.container.name}"):
            self.container.rename(final)
            self.container.reload()
        try:
            self._switch_traffic(final)
        except AgentError as exc:
            self.steps.finish("switch_traffic", "error", exc.message)
            raise
        self.steps.finish("switch_traffic", metadata=self._metadata())

    def _switch_traffic(self, name):
        services, primary = self.services, self.release.primary
        if getattr(type(services), "proxy", None) is None:
            self.say("switch_traffic", "no proxy is configured on this agent: traffic not switched")
            return
        port = primary["internal"] if primary else None
        count = services.proxy.switch(self.release.service_uid, name, port)
        if count:
            self.say("switch_traffic", f"{count} domain(s) now point to {name}:{port}")
        else:
            self.say("switch_traffic", "the service has no domains: nothing to switch")

    def _cleanup(self, drain):
        self.progress("cleanup", "removing the previous container")
        self.steps.start("cleanup", "Remove the previous container", log_type="deploy")
        self._mark("cleanup")
        if self.previous is not None:
            if drain and self.release.drain_seconds:
                self.say("cleanup", f"draining {self.previous.name} for {self.release.drain_seconds:g}s")
                gevent.sleep(self.release.drain_seconds)
            self._remove_quietly(self.previous, "cleanup", stop=True)
        self.steps.finish("cleanup")

    # -- helpers ------------------------------------------------------------------------

    def _check_ports(self, own_containers):
        """docs/commands.md, "Deployments": a host port published by another container or held by any process
        is ``conflict``; checked before the previous version is stopped."""
        own = {c.id for c in own_containers}
        wanted = {m["external"] for m in self.release.port_mappings if m["external"] > 0}
        for container in self.docker.list_containers():
            if container.id in own:
                continue
            for bindings in ((container.attrs.get("HostConfig") or {}).get("PortBindings") or {}).values():
                for binding in bindings or []:
                    if binding.get("HostPort", "").isdigit() and int(binding["HostPort"]) in wanted \
                            and state_of(container) in ("running", "restarting", "created"):
                        raise AgentError("conflict", f"port {binding['HostPort']} is in use by container "
                                                     f"'{container.name}'")
        held_by_previous = _published_ports(self.previous)
        for port in sorted(wanted - held_by_previous):
            if not _port_free(port):
                raise AgentError("conflict", f"port {port} is in use on the host")

    def _stop_previous(self, step_id):
        previous = self.previous
        if previous is None or state_of(previous) not in ("running", "restarting", "paused"):
            return
        self.say(step_id, f"stopping {previous.name} to free its host ports")
        self.docker.mark_expected(previous.id)
        self._previous_stopped = True
        try:
            with translate(f"stop {previous.name}"):
                previous.stop(timeout=self.stop_grace)
                previous.reload()
        except AgentError:
            if not self.release.force:
                raise
            with translate(f"kill {previous.name}"):
                previous.kill()
        if state_of(previous) == "running":
            if not self.release.force:
                raise AgentError("failed_precondition", f"{previous.name} did not stop")
            with translate(f"kill {previous.name}"):
                previous.kill()

    def _restore_previous(self):
        previous = self.previous
        if previous is None:
            return False
        try:
            with translate(f"start {previous.name}"):
                previous.start()
                deadline = time.monotonic() + RESTORE_WAIT
                while time.monotonic() < deadline:
                    previous.reload()
                    if state_of(previous) == "running":
                        self.say("deploy_container", f"previous version {previous.name} restored", "WARN")
                        return True
                    gevent.sleep(0.5)
        except AgentError as exc:
            self.say("deploy_container", f"cannot restart {previous.name}: {exc.message}", "ERROR")
        finally:
            self.docker.clear_expected(previous.id)
        return False

    def _discard(self):
        if self.container is None:
            # interrupted (cancel, deadline) between the engine creating the candidate and the
            # SDK returning it: find it by its name, unique to this version
            name = container_name(self.release.service_uid, self.version, candidate=True)
            try:
                with translate(f"find {name}"):
                    self.container = self.docker.client.containers.get(name)
            except AgentError:
                return
        self._remove_quietly(self.container, "deploy_container")

    def _remove_quietly(self, container, step_id, stop=False):
        """Stop (30 s grace) and remove; a failure here is only a warning (docs/commands.md, "Deployments")."""
        self.docker.mark_expected(container.id)
        try:
            with translate(f"remove {container.name}"):
                if stop and state_of(container) == "running":
                    container.stop(timeout=self.stop_grace)
                container.remove(force=True)
            self.say(step_id, f"removed {container.name}")
        except AgentError as exc:
            if exc.code != "not_found":
                self.say(step_id, f"could not remove {container.name}: {exc.message}", "WARN")

    def _remove_stale_candidates(self, containers):
        for container in containers:
            if container.name.endswith(CANDIDATE_SUFFIX):
                self._remove_quietly(container, "initialize")

    def _metadata(self):
        return {"deployment_version": self.version, "target_container": container_name(
            self.release.service_uid, self.version),
            "current_active_container": self.previous.name if self.previous is not None else "",
            "container_id": self.container.id if self.container is not None else "",
            "active_container": self.container.name if self.container is not None else "",
            "deployment_strategy": self.release.swap_mode}

    def _result(self):
        primary = self.release.primary
        return {"container": self.container.id, "container_name": self.container.name,
                "deployment_version": self.version, "swap_mode": self.release.swap_mode,
                "previous_container": self.previous.name if self.previous is not None else None,
                "previous_image": _image_ref(self.previous),
                "port": (primary["external"] or primary["internal"]) if primary else 0}


def _published_ports(container):
    if container is None:
        return set()
    bindings = (container.attrs.get("HostConfig") or {}).get("PortBindings") or {}
    return {int(b["HostPort"]) for items in bindings.values() for b in items or [] if b.get("HostPort", "").isdigit()}


def _port_free(port):
    """Try the bind the published port would need (0.0.0.0:<port>)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _image_ref(container):
    if container is None:
        return None
    return (container.attrs.get("Config") or {}).get("Image") or ""
