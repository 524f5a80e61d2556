"""The database service: the one object handlers talk to (docs/design.md, "Habits": plain classes per system)."""

from agent.errors import AgentError
from agent.services.backups import pipeline
from agent.services.database import provision, restore, target
from agent.services.docker import DockerService
from agent.services.interrupted import RESTARTED, Result


class DatabaseService:
    """Provision and restore database containers, and find them for the backups service.

    Every method raises AgentError with the codes documented on the module functions it
    calls (provision.deploy, target.find, restore.resolve / verify / run).
    """

    def __init__(self, cfg, docker=None):
        """``docker``: the worker's DockerService; a tool without one gets its own."""
        self.cfg = cfg
        self._owns_docker = docker is None
        self.docker = docker or DockerService(cfg)

    def close(self):
        if self._owns_docker:
            self.docker.close()

    def deploy(self, ctx, request):
        """``request``: a provision.DeployRequest; the reply data of database.deploy."""
        ctx.secret(request.password)
        return provision.deploy(ctx, self.docker, self.cfg, request)

    def restore(self, ctx, service_uid, backup_path=None, backup_uid=None, safety_backup=True):
        """The reply data of database.backup.restore."""
        path = restore.resolve(self.cfg, service_uid, backup_path, backup_uid)
        found = self.target(ctx, service_uid)
        return restore.run(ctx, self.docker, self.cfg, found, path, safety_backup)

    def recover(self, record):
        """Restart hook (docs/operations.md, "Restart recovery") for an interrupted restore or
        database deploy: an interrupted.Result. Raises AgentError when Docker is unreachable."""
        if record["kind"] == "restore":
            status, message, details = restore.recover(self.docker, record)
            return Result(status, message, dict(details, recovery=status), _safety_backup_failed(record))
        container = self.docker.database_container(record["service_uid"])
        running = container is not None and (container.attrs.get("State") or {}).get("Status") == "running"
        state = f"{container.name} runs" if running else "the database container does not run"
        status = "running" if running else "failed"
        return Result(status, f"database deploy interrupted; {state}", {"recovery": status})

    def target(self, ctx, service_uid):
        """The service's database container (a target.DatabaseTarget); its credentials are
        redacted from the call's output from here on."""
        found = target.find(self.docker, service_uid)
        for value in found.secrets():
            ctx.secret(value)
        return found


def _safety_backup_failed(record):
    """A restore killed while taking its safety backup: that backup failed (its partial
    file was removed at start-up by the backups service's hook)."""
    if record.get("phase") != "safety_backup" or not record.get("safety_backup_uid"):
        return []
    return [pipeline.status_update(record["safety_backup_uid"], record["service_uid"], "failed", "pre_restore",
                                   AgentError("internal", RESTARTED))]
