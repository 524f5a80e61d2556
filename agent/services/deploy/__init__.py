"""App delivery: deployments, installs, rollbacks and deployment logs (docs/commands.md, "Deployments" and "Logs and stats").

:class:`DeployService` is what the handlers call; the work happens in the modules of this
package: ``pipeline`` (service.app.deploy), ``swap`` and ``gate`` (container swap and
readiness gate), ``rollback``, ``history`` (build history and plans), ``logs`` (deployment
logs and steps), ``fetch`` and ``streams`` (reading them back), ``images`` (names, pruning),
``methods`` (dockerfile / nixpacks / docker-compose) and ``composed`` (the compose method).
"""

from agent.errors import AgentError
from agent.services.interrupted import PhaseLog, Result
from agent.services.deploy import fetch as fetch_module
from agent.services.deploy import methods, recovery
from agent.services.deploy import request as req
from agent.services.deploy.history import BuildHistory
from agent.services.deploy.images import AppImages
from agent.services.deploy.pipeline import DeployPipeline
from agent.services.deploy.rollback import Rollback
from agent.services.deploy.streams import DeployLogStreams


class DeployService:
    """Public methods raise AgentError with the codes their commands document
    (invalid_argument, not_found, failed_precondition, permission_denied, unavailable,
    command_failed, health_check_failed, cancelled, deadline_exceeded)."""

    def __init__(self, services):
        self.services = services
        self.cfg = services.cfg
        self.history = BuildHistory(self.cfg.deployment_dir)
        self.images = AppImages(services.docker)
        self.streams = DeployLogStreams(self)
        self._running = {}            # deployment_uid -> service_uid, while a deploy runs
        self._known = {}              # deployment_uid -> service_uid, every deploy seen by this process

    # -- commands -----------------------------------------------------------------------

    def deploy(self, ctx, request):
        """Run the pipeline of docs/commands.md, "Deployments" and return the reply data."""
        uid, dep = request["service_uid"], request["deployment_uid"]
        self._running[dep] = self._known[dep] = uid
        journal = PhaseLog.for_call(ctx, "deploy", f"deploy:{dep}", uid, deployment_uid=dep)
        try:
            return DeployPipeline(self, ctx, request, journal).run()
        finally:
            self._running.pop(dep, None)
            if journal is not None:
                journal.close()     # ended by itself: nothing for restart recovery

    def install(self, ctx, request):
        """Fetch the source, choose the build method and store the build plan; builds
        nothing (docs/commands.md, "Deployments"). A failure also reports the service ``failed``."""
        uid = request["service_uid"]
        try:
            repo_url, token = req.resolve_repo(ctx, request, self.services.git.normalize_url)
            ctx.secret(token)
            stored_plan = self.history.load_plan(uid)
            source = self.services.git.prepare(uid, repo_url, token, request.get("github_branch"),
                                               request.get("commit_sha"), ctx)
            self.report_dockerfiles(ctx, uid, source["clone_path"])
            method = methods.choose(self.services, request, source["clone_path"])
            compose_plan = None
            if method.kind == methods.COMPOSE:
                compose_plan = methods.plan_compose(self.services, uid, request, method, source["clone_path"],
                                                    needs_target=bool(req.port_mappings(request)))
            methods.report_nixpacks(ctx, uid, method, source, stored_plan)
            self.history.save_plan(uid, methods.plan_record(method, source, repo_url, compose_plan))
        except AgentError as exc:
            ctx.emit("update_service_status", {"service_uid": uid, "status": "failed", "error": exc.message,
                                               "timestamp": _now()})
            raise
        return {"success": True, "clone_path": source["clone_path"], "commit_sha": source["commit_sha"],
                "build_method": method.kind}

    def rollback(self, ctx, request):
        """docs/commands.md, "Deployments"; compose services are refused with failed_precondition."""
        plan = self.history.load_plan(request["service_uid"]) or {}
        if plan.get("build_method") == "docker-compose":
            raise AgentError("failed_precondition", "rollback is not supported for docker-compose services")
        journal = PhaseLog.for_call(ctx, "rollback", f"rollback:{request['service_uid']}", request["service_uid"])
        try:
            return Rollback(self, ctx, request, journal).run()
        finally:
            if journal is not None:
                journal.close()

    def logs_fetch(self, request):
        return fetch_module.fetch(self.cfg, self.services.docker, request["service_uid"], request["deployment_uid"],
                                  request.get("lines", 100), request.get("since"), request.get("log_type", "build"))

    def stream_start(self, request):
        dep = request["deployment_uid"]
        service_uid = request.get("service_uid") or self._known.get(dep, "")
        return self.streams.start(dep, service_uid, request.get("offsets") or {}, request.get("include_steps", False),
                                  request.get("flush_interval_ms", 1000) / 1000.0,
                                  request.get("idle_timeout_seconds", 900.0))

    def stream_stop(self, request):
        return self.streams.stop(request["deployment_uid"])

    # -- shared by pipeline and install --------------------------------------------------

    def is_running(self, deployment_uid):
        return deployment_uid in self._running

    def report_dockerfiles(self, ctx, service_uid, clone_path):
        paths = req.dockerfile_paths(clone_path)
        if paths:
            ctx.emit("update_docker_config", {"service_uid": service_uid, "dockerfile_paths": paths})

    def recover(self, record):
        """Restart hook (docs/operations.md, "Restart recovery") for an interrupted deploy,
        rollback or install: one version of the service is left; returns an
        interrupted.Result. A deploy the recovery finished gets its build-history entry.
        Raises AgentError (docker...)."""
        if record["kind"] == "install":
            return Result("failed", "service.app.install interrupted: its build plan may be missing, run it again",
                          {"recovery": "failed"})
        outcome = recovery.recover_swap(self.services, record)
        if outcome.status == "completed" and record.get("kind") == "deploy":
            recovery.complete_history(self.history, record)
        return recovery.result_of(record, outcome)

    def on_service_delete(self, service_uid, options):
        """service.delete takes part here: a compose project goes ``down --remove-orphans``
        (``--volumes`` only with ``delete_volumes``, docs/commands.md, "Lifecycle")."""
        plan = self.history.load_plan(service_uid) or {}
        compose = plan.get("compose") if plan.get("build_method") == methods.COMPOSE else None
        if not isinstance(compose, dict) or not compose.get("project"):
            return {}
        removed = self.services.compose.down(compose["project"], compose.get("workdir"), compose.get("files") or [],
                                             volumes=bool(options.get("delete_volumes")))
        return {"containers_deleted": removed}

    def close(self):
        self.streams.close()


def _now():
    from agent.services.deploy.logs import rfc3339
    return rfc3339()
