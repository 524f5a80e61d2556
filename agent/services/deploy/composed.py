"""The Docker Compose method inside the deployment pipeline (docs/compose.md).

Project ``pulseup-<uid>`` (or ``docker_compose_project_name``); the agent's override file
(labels, ports, env, ``pulseup-net`` with the alias ``<project>-<service>`` of the selected
service) passed last and deleted afterwards; ``up`` waits for state and health; then the
service's domains are re-pointed to the alias. No image tag and no history entry (so no
rollback); the reply says ``deployment_color: "compose"``.
"""

import os

from agent.services.deploy import methods
from agent.services.deploy import request as req
from agent.services.deploy.swap import container_env


class ComposeDeployment:
    """``run()`` returns the reply fields; raises what ComposeService and the proxy raise
    (failed_precondition for an unsafe file or no compose, invalid_argument for the service
    selection, command_failed, health_check_failed, cancelled, deadline_exceeded)."""

    def __init__(self, pipeline, method, env):
        self.pipeline = pipeline
        self.services = pipeline.services
        self.method = method
        self.env = env
        self.mappings = req.port_mappings(pipeline.request)

    def run(self):
        pipe = self.pipeline
        plan = self._plan()
        pipe.owner.history.save_plan(pipe.uid, methods.plan_record(self.method, pipe.source, pipe.repo_url, plan))
        result = self._up(plan)
        self._switch(result["upstream"])
        return {"success": True, "deployment_method": methods.COMPOSE, "container_name": result["container_name"],
                "deployment_color": "compose", "commit_sha": pipe.source["commit_sha"],
                "commit_message": pipe.source["commit_message"]}

    def _plan(self):
        pipe = self.pipeline
        pipe.steps.start("build_image", "Prepare the compose project", log_type="build")
        pipe.report.progress("build", "checking the compose project")
        domains = self._has_domains()
        plan = methods.plan_compose(self.services, pipe.uid, pipe.request, self.method,
                                    pipe.source["clone_path"], needs_target=bool(self.mappings) or domains)
        target = f", ports and domains to {plan.target} ({plan.alias})" if plan.target else ""
        pipe.steps.log("build_image", f"project {plan.project}: services {', '.join(plan.services)}{target}")
        pipe.steps.finish("build_image")
        return plan

    def _up(self, plan):
        pipe = self.pipeline
        request = pipe.request
        pipe.steps.start("deploy_container", f"compose up {plan.project}", log_type="deploy")
        env = container_env(self.env, self.mappings)
        override = self.services.compose.write_override(plan, pipe.uid, pipe.deployment_uid, self.mappings, env)
        try:
            # compose builds the images it needs: the build slot pool covers it (docs/commands.md, "Operations")
            with self.services.build.slot(pipe.ctx, on_wait=lambda: pipe.report.progress(
                    "queued", "waiting for a build slot")):
                pipe.report.progress("deploy", f"bringing up compose project {plan.project}")
                result = self.services.compose.up(plan, override, request.get("health_timeout_seconds", 120.0),
                                                  pipe.dlog.build, pipe.ctx)
        finally:
            os.unlink(override)
        pipe.steps.log("deploy_container", f"running: {', '.join(result['containers'])}")
        pipe.steps.finish("deploy_container", metadata={"active_container": result["container_name"],
                                                        "deployment_strategy": "compose"})
        return result

    def _switch(self, upstream):
        """Re-point the service's domains to the selected service's alias; from here on the
        deployment completes (point of no return, docs/commands.md, "Deployments")."""
        pipe = self.pipeline
        pipe.ctx.check()
        pipe.ctx.point_of_no_return()
        pipe.report.progress("switch_traffic", "switching traffic")
        pipe.steps.start("switch_traffic", "Switch traffic", log_type="deploy")
        primary = self.mappings[0]["internal"] if self.mappings else None
        count = 0
        if upstream and getattr(type(self.services), "proxy", None) is not None:
            count = self.services.proxy.switch(pipe.uid, upstream, primary)
        pipe.steps.log("switch_traffic", f"{count} domain(s) now point to {upstream}" if count
                       else "the service has no domains: nothing to switch")
        pipe.steps.finish("switch_traffic")

    def _has_domains(self):
        if getattr(type(self.services), "proxy", None) is None:
            return False
        return bool(self.services.proxy.domains_of(self.pipeline.uid))
