"""The deployment pipeline of ``service.app.deploy`` (docs/commands.md, "Deployments").

initialize -> fetch_source -> build_image (in a build slot; ``docker build`` or ``nixpacks
build``) -> deploy_container -> health_check -> switch_traffic -> cleanup. The compose method
brings its project up instead (``composed``). Progress is reported with ``update_deployment_status``
(``in_progress`` with a phase, then exactly one of ``completed``/``failed``/``cancelled``) and a
``deployment_heartbeat`` every 20 s while it runs. Any failure removes the candidate and leaves
the previous container serving (the swap does that).
"""

import time

import gevent

from agent import log
from agent.errors import AgentError
from agent.services.deploy import methods
from agent.services.deploy import request as req
from agent.services.deploy.composed import ComposeDeployment
from agent.services.deploy.images import image_uid
from agent.services.deploy.logs import DeploymentLog, Steps, rfc3339
from agent.services.deploy.swap import Release, Swap, container_env, mappings_env

HEARTBEAT_INTERVAL = 20.0

_log = log.get("deploy")


class Reporter:
    """``update_deployment_status`` events and the heartbeat of one deployment."""

    def __init__(self, services, ctx, service_uid, deployment_uid):
        self.services, self.ctx = services, ctx
        self.service_uid, self.deployment_uid = service_uid, deployment_uid
        self._heartbeat = None

    def status(self, status, **fields):
        data = {"deployment_uid": self.deployment_uid, "service_uid": self.service_uid, "status": status,
                "timestamp": int(time.time())}
        data.update({k: v for k, v in fields.items() if v is not None})
        self.ctx.emit("update_deployment_status", data)

    def progress(self, phase, message):
        self.ctx.set_phase(phase)
        self.status("in_progress", phase=phase, message=message)

    def start_heartbeat(self):
        self._heartbeat = self.services.spawn(f"deploy-heartbeat-{self.deployment_uid}", self._beat)

    def stop_heartbeat(self):
        if self._heartbeat is not None:
            self._heartbeat.kill(block=False)

    def _beat(self):
        while True:
            gevent.sleep(HEARTBEAT_INTERVAL)
            self.ctx.emit("deployment_heartbeat", {"deployment_uid": self.deployment_uid,
                                                   "timestamp": int(time.time())})


class DeployPipeline:
    """Runs one deployment; ``run()`` returns the reply data or raises the AgentError that
    ended it (after emitting the terminal event)."""

    def __init__(self, owner, ctx, request, journal=None):
        self.owner = owner                      # the DeployService
        self.journal = journal                  # PhaseLog for restart recovery, or None
        self.services = owner.services
        self.ctx = ctx
        self.request = request
        self.uid = request["service_uid"]
        self.deployment_uid = request["deployment_uid"]
        self.dlog = DeploymentLog(owner.cfg.deployment_log_dir, self.uid, self.deployment_uid)
        self.steps = Steps(owner.cfg.deployment_log_dir, self.deployment_uid, self.dlog)
        self.report = Reporter(self.services, ctx, self.uid, self.deployment_uid)
        self.source = None
        self.repo_url = None

    def run(self):
        started = time.monotonic()
        _log.info("deployment %s of service %s started", self.deployment_uid, self.uid)
        self.report.progress("fetch_source", "deployment started")
        self.report.start_heartbeat()
        try:
            result = self._pipeline()
        except BaseException as exc:
            self._fail(exc)
            raise
        finally:
            self.report.stop_heartbeat()
        result["duration_seconds"] = round(time.monotonic() - started, 3)
        self.dlog.deploy(f"deployment {self.deployment_uid} completed in {result['duration_seconds']:g}s")
        _log.info("deployment %s of service %s completed", self.deployment_uid, self.uid)
        self.report.status("completed", message="deployment completed", commit_sha=result["commit_sha"],
                           commit_message=result["commit_message"], image=result.get("image"),
                           container_name=result.get("container_name"),
                           deployment_version=result.get("deployment_version"))
        return result

    def _pipeline(self):
        self.repo_url, token, env = self._initialize()
        stored_plan = self.owner.history.load_plan(self.uid)
        self.source = self.fetch(self.repo_url, token)
        method = methods.choose(self.services, self.request, self.source["clone_path"], self.dlog.build)
        self.dlog.build(f"build method: {method.kind}")
        methods.report_nixpacks(self.ctx, self.uid, method, self.source, stored_plan)
        if method.kind == methods.COMPOSE:
            return ComposeDeployment(self, method, env).run()
        image = self._build(method, env)
        release = self._release(image, env)
        entry, plan = self._history_entry(release, method), methods.plan_record(method, self.source, self.repo_url)
        if self.journal is not None:        # what restart recovery writes if it finishes the swap
            self.journal.update(history=entry, plan=plan)
        swap = Swap(self.services, release, self.steps, self.ctx, self.report.progress, self.journal).run()
        self._record(entry, plan)
        return {"success": True, "deployment_method": method.kind, "image": image,
                "container": swap["container"], "container_name": swap["container_name"],
                "swap_mode": swap["swap_mode"], "deployment_version": swap["deployment_version"],
                "commit_sha": self.source["commit_sha"], "commit_message": self.source["commit_message"]}

    def _initialize(self):
        self.steps.start("initialize", f"Deployment {self.deployment_uid} of {self.uid}", log_type="deploy")
        repo_url, token = req.resolve_repo(self.ctx, self.request, self.services.git.normalize_url)
        self.ctx.secret(token)
        env = req.resolve_env(self.ctx, self.request)
        for value in env.values():
            self.ctx.secret(value)
        self.steps.log("initialize", f"repository {repo_url}, {len(env)} environment variables")
        self.steps.finish("initialize")
        return repo_url, token, env

    def fetch(self, repo_url, token):
        self.ctx.check()
        self.steps.start("fetch_source", f"Fetch {repo_url}", log_type="build")
        request = self.request
        source = self.services.git.prepare(self.uid, repo_url, token, request.get("github_branch"),
                                           request.get("commit_sha"), self.ctx)
        self.steps.log("fetch_source", f"checked out {source['commit_sha']}: "
                                       f"{source['commit_message'].splitlines()[0] if source['commit_message'] else ''}")
        self.steps.finish("fetch_source")
        self.owner.report_dockerfiles(self.ctx, self.uid, source["clone_path"])
        return source

    def _build(self, method, env):
        image_ref = f"pulseup-app-{image_uid(self.uid)}:{self.source['commit_sha'][:12]}"
        tags = [image_ref, f"pulseup-app:{self.uid}"]
        self.steps.start("build_image", f"Build {image_ref} ({method.kind})", log_type="build")
        self.report.progress("build", f"building {image_ref}")
        build = self.services.build
        with build.slot(self.ctx, on_wait=lambda: self.report.progress("queued", "waiting for a build slot")):
            self.report.progress("build", f"building {image_ref}")
            if method.kind == methods.NIXPACKS:
                # the plan's variables: the env plus PORT (docs/commands.md, "Deployments")
                variables = container_env(env, req.port_mappings(self.request))
                self.services.nixpacks.build(method.context_dir, method.nixpacks_plan, tags, variables,
                                             self.dlog.build, self.ctx)
            else:
                build.build(method.context_dir, method.dockerfile, tags, env, self.dlog.build, self.ctx)
        self.steps.log("build_image", f"built {image_ref}")
        self.steps.finish("build_image")
        return image_ref

    def _release(self, image, env):
        request, service = self.request, self.request.get("service") or {}
        mappings = req.port_mappings(request)
        env = dict(env, PULSEUP_PORT_MAPPINGS=mappings_env(mappings))
        return Release(self.uid, self.deployment_uid, image, self.source["commit_sha"], env, mappings,
                       request.get("cpu_limit"), request.get("memory_limit"),
                       request.get("health_check_path") or service.get("health_check_path"),
                       request.get("health_timeout_seconds", 120.0), request.get("drain_seconds", 5.0))

    def _history_entry(self, release, method):
        return {"success": True, "image_name": release.image, "build_time": rfc3339(),
                "commit_sha": self.source["commit_sha"], "commit_message": self.source["commit_message"],
                "deployment_uid": self.deployment_uid, "deployed_at": rfc3339(),
                "deployment_method": method.kind, "port_mappings": release.port_mappings,
                "cpu_limit": release.cpu_limit, "memory_limit": release.memory_limit,
                "health_check_path": release.health_check_path}

    def _record(self, entry, plan):
        self.owner.history.save_plan(self.uid, plan)
        entries = self.owner.history.record(self.uid, dict(entry, deployed_at=rfc3339()))
        self.owner.images.prune(self.uid, [e.get("image_name") for e in entries], self.dlog.deploy)

    def _fail(self, exc):
        error = exc if isinstance(exc, AgentError) else AgentError("cancelled", "operation cancelled")
        if not isinstance(exc, (AgentError, gevent.GreenletExit)):
            error = AgentError("internal", f"internal error: {type(exc).__name__}: {exc}")
        _log.warning("deployment %s of service %s ended: %s", self.deployment_uid, self.uid, error.code)
        self.steps.fail_running(error.message)
        self.dlog.deploy(f"deployment failed ({error.code}): {error.message}", "ERROR")
        status = "cancelled" if error.code == "cancelled" else "failed"
        self.report.status(status, error=log.redact(error.message), code=error.code,
                           commit_sha=(self.source or {}).get("commit_sha"))
