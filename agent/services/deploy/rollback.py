"""``service.deploy.rollback`` (docs/commands.md, "Deployments"): a previous image of the build history through
the same gated swap as a deployment, with a new version number and the target's labels.

Target: the entry with the requested ``deployment_uid``; else ``target_version`` (exact image
reference or commit prefix); else ``commit_sha`` (prefix); else the newest entry whose image
differs from the active container's. The image must still exist locally (no rebuild). History
is not modified.
"""

import time

from agent.errors import AgentError
from agent.services.deploy import request as req
from agent.services.deploy.logs import DeploymentLog, Steps
from agent.services.deploy.swap import Release, Swap, mappings_env
from agent.services.docker import translate
from agent.values import rfc3339


def select_target(history, request, active_image=None):
    """The history entry to roll back to; raises not_found."""
    if request.get("deployment_uid"):
        wanted = request["deployment_uid"]
        found = [e for e in history if e.get("deployment_uid") == wanted]
        what = f"deployment {wanted}"
    elif request.get("target_version"):
        wanted = request["target_version"]
        found = [e for e in history if e.get("image_name") == wanted] or _by_commit(history, wanted)
        what = f"version {wanted}"
    elif request.get("commit_sha"):
        found = _by_commit(history, request["commit_sha"])
        what = f"commit {request['commit_sha']}"
    else:
        found = [e for e in history if e.get("image_name") != active_image]
        what = "a previous image"
    if not found:
        raise AgentError("not_found", f"no build history entry for {what}")
    return found[0]


def _by_commit(history, prefix):
    prefix = prefix.lower()
    return [e for e in history if (e.get("commit_sha") or "").lower().startswith(prefix)]


def image_env(docker, image_id):
    """The ``KEY=value`` entries an image sets itself (not the service's environment)."""
    try:
        with translate("inspect image"):
            return set((docker.api.inspect_image(image_id).get("Config") or {}).get("Env") or [])
    except AgentError:
        return set()


def container_settings(docker, container):
    """(env, port mappings, cpu limit, memory limit) of a running app container."""
    config, host = container.attrs.get("Config") or {}, container.attrs.get("HostConfig") or {}
    own = image_env(docker, container.attrs.get("Image"))
    env = dict(item.partition("=")[::2] for item in config.get("Env") or [] if item not in own)
    mappings = []
    for key, bindings in sorted((host.get("PortBindings") or {}).items()):
        internal = int(key.split("/")[0])
        for binding in bindings or []:
            mappings.append({"external": int(binding.get("HostPort") or 0), "internal": internal})
    if not mappings and env.get("PORT", "").isdigit():
        mappings = [{"external": 0, "internal": int(env["PORT"])}]
    cpu = host.get("NanoCpus") / 1e9 if host.get("NanoCpus") else None
    return env, req.dedupe_mappings(mappings), cpu, host.get("Memory") or None


class Rollback:
    """Runs one rollback; ``run()`` returns the reply data, or emits ``failed`` and raises."""

    def __init__(self, owner, ctx, request, journal=None):
        self.owner, self.ctx, self.request = owner, ctx, request
        self.journal = journal          # PhaseLog for restart recovery, or None
        self.services = owner.services
        self.uid = request["service_uid"]

    def _event(self, status, message, **fields):
        data = {"service_uid": self.uid, "status": status, "message": message, "timestamp": int(time.time())}
        data.update({k: v for k, v in fields.items() if v is not None})
        self.ctx.emit("rollback_status_update", data)

    def run(self):
        started = time.monotonic()
        docker = self.services.docker
        active = docker.active_container(self.uid)
        active_image = (active.attrs.get("Config") or {}).get("Image") if active is not None else None
        target = select_target(self.owner.history.load(self.uid), self.request, active_image)
        if not self.owner.images.exists(target["image_name"]):
            raise AgentError("not_found", f"image {target['image_name']} no longer exists locally")
        self._event("rolling_back", f"rolling back to {target['image_name']}", rolled_back_to=target["image_name"])
        try:
            release = self._release(target, active)
            log_id = f"rollback_{time.time_ns()}"
            dlog = DeploymentLog(self.owner.cfg.deployment_log_dir, self.uid, log_id)
            steps = Steps(self.owner.cfg.deployment_log_dir, log_id, dlog)
            steps.start("initialize", f"Rollback of {self.uid} to {target['image_name']}", log_type="deploy")
            steps.finish("initialize")
            if self.journal is not None:
                self.journal.update(rolled_back_to=target["image_name"])
            swap = Swap(self.services, release, steps, self.ctx,
                        lambda phase, message: self.ctx.set_phase(phase), self.journal).run()
        except BaseException as exc:
            error = exc if isinstance(exc, AgentError) else AgentError("cancelled", "operation cancelled")
            self._event("failed", error.message, code=error.code, rolled_back_to=target["image_name"])
            raise
        self._event("running", f"rolled back to {target['image_name']}", rolled_back_to=target["image_name"])
        return {"service_uid": self.uid, "rolled_back_to": target["image_name"], "container_id": swap["container"],
                "container_name": swap["container_name"], "port": swap["port"],
                "rollback_time": rfc3339(precision="s"),
                "previous_version": swap["previous_image"] or "", "status": "running",
                "commit_sha": target.get("commit_sha") or "", "commit_message": target.get("commit_message") or "",
                "duration_seconds": round(time.monotonic() - started, 3)}

    def _release(self, target, active):
        if active is not None:
            env, mappings, cpu, memory = container_settings(self.services.docker, active)
        else:
            env, mappings, cpu, memory = req.fetch_env(self.ctx, self.uid), [], None, None
        env.update(self.request.get("env_vars") or {})
        for value in env.values():
            self.ctx.secret(value)
        mappings = target.get("port_mappings") or mappings
        env["PULSEUP_PORT_MAPPINGS"] = mappings_env(mappings)
        return Release(self.uid, target.get("deployment_uid") or "", target["image_name"],
                       target.get("commit_sha") or "", env, mappings,
                       target.get("cpu_limit") or cpu, target.get("memory_limit") or memory,
                       target.get("health_check_path"), self.request.get("health_timeout_seconds", 120.0),
                       self.request.get("drain_seconds", 5.0), self.request.get("force", False))
