"""service.delete (docs/commands.md, "Lifecycle"): everything a service left on the host, idempotently.

Order: stop its log stream; let every service that keeps per-service state clean up (the
proxy removes its domains, the scheduler its backup schedule, compose runs ``down``): any
service object with ``on_service_delete(service_uid, options) -> dict`` takes part; then
force-remove the labelled containers and the legacy names, the service's images (exact
repository and tag matches), and on request its volume, backups and files.
"""

import glob
import json
import os
import re
import shutil

from agent.errors import AgentError
from agent.protocol.fields import UID_RE
from agent.services.git import repository_dir
from agent.services.docker import SERVICE_UID, DEPLOYMENT_UID, labels_of, translate

# docker/distribution reference grammar for one path component of a repository name
REPO_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
RESULT_LISTS = ("containers_deleted", "domains_removed", "images_removed", "volumes_removed",
                "paths_removed", "warnings")


# Services that take part in service.delete through ``on_service_delete``; named
# explicitly so a delete does not build every service of the container.
PARTICIPANTS = ("proxy", "backups", "deploy")


def participant_names(services):
    """The participating services this build has (a missing module is skipped)."""
    names = []
    for name in PARTICIPANTS:
        try:
            getattr(services, name)
        except (AttributeError, ImportError):
            continue
        names.append(name)
    return names


class Deletion:
    def __init__(self, services, service_uid, delete_volumes=False, delete_backups=False,
                 purge_files=False, check=None):
        self.services, self.docker, self.cfg = services, services.docker, services.cfg
        self.uid = service_uid
        self.options = {"delete_volumes": delete_volumes, "delete_backups": delete_backups,
                        "purge_files": purge_files}
        self.check = check or (lambda: None)
        self.result = {"service_uid": service_uid, **{key: [] for key in RESULT_LISTS}}
        self.failures = []

    def run(self):
        """Delete; the reply data. Raises AgentError carrying the partial results when any
        requested removal failed."""
        streams = getattr(self.services, "container_logs", None)
        if streams is not None:
            streams.stop(self.uid, "Log stream ended: service deleted", missing_ok=True)
        self._participants()
        self.check()
        repos, deployments = self._remove_containers()
        self._remove_images(repos)
        if self.options["delete_volumes"]:
            self._remove_volume(f"pulseup-db-vol-{self.uid}")
        if self.options["delete_backups"]:
            self._remove_path(os.path.join(self.cfg.pulseup_backup_dir, self.uid))
        if self.options["purge_files"]:
            self._purge(deployments)
        return self._reply()

    def _reply(self):
        result = self.result
        result["deletion_count"] = len(result["containers_deleted"])
        if not result["warnings"]:
            del result["warnings"]
        if self.failures:
            first = self.failures[0]
            code = first.code if first.code != "not_found" else "internal"
            message = f"deleting {self.uid} failed: {first.message.removeprefix('internal error: ')}"
            if code == "internal":
                message = "internal error: " + message
            raise AgentError(code, message, **result)
        result["message"] = (f"Service {self.uid} deleted" if result["deletion_count"]
                             else f"Service {self.uid} had no containers")
        return result

    def _participants(self):
        for name in participant_names(self.services):
            try:
                hook = getattr(getattr(self.services, name), "on_service_delete", None)
                outcome = hook(self.uid, dict(self.options)) if hook is not None else None
            except AgentError as exc:
                self.failures.append(exc)
                continue
            for key in RESULT_LISTS:
                self.result[key].extend((outcome or {}).get(key, ()))

    # -- containers and images ----------------------------------------------------------

    def _targets(self):
        containers = self.docker.find_service_containers(self.uid)
        for name in (f"pulseup-app-{self.uid}", f"pulseup-db-{self.uid}"):
            legacy = self.docker.find_container(name)
            owner = labels_of(legacy).get(SERVICE_UID) if legacy is not None else None
            # docs/commands.md, "Docker names and labels": a legacy name is ours when unlabelled or labelled with this uid
            if legacy is not None and owner in (None, self.uid) and legacy not in containers:
                containers.append(legacy)
        return containers

    def _remove_containers(self):
        repos, deployments = set(), set()
        for container in self._targets():
            image = (container.attrs.get("Config") or {}).get("Image", "")
            repo = image.rpartition(":")[0] if ":" in image.rpartition("/")[2] else image
            if repo.startswith("pulseup-app-"):
                repos.add(repo)
            deployments.add(labels_of(container).get(DEPLOYMENT_UID, ""))
            self.docker.mark_expected(container.id)
            try:
                with translate(f"remove {container.name}"):
                    container.remove(force=True, v=True)
            except AgentError as exc:
                if exc.code != "not_found":
                    self.failures.append(exc)
                    continue
            self.result["containers_deleted"].append(container.name)
        if REPO_COMPONENT.match(f"pulseup-app-{self.uid}"):
            repos.add(f"pulseup-app-{self.uid}")
        return repos, {d for d in deployments if UID_RE.match(d)}

    def _remove_images(self, repos):
        tags = []
        with translate("list images"):
            for repo in sorted(repos):
                for image in self.docker.client.images.list(name=repo):
                    tags += [t for t in image.tags if t.rpartition(":")[0] == repo]
            moving = f"pulseup-app:{self.uid}"
            tags += [t for image in self.docker.client.images.list(name="pulseup-app")
                     for t in image.tags if t == moving]
        for tag in sorted(set(tags)):
            try:
                with translate(f"remove image {tag}"):
                    self.docker.client.images.remove(tag)
            except AgentError as exc:
                if exc.code != "not_found":
                    self.failures.append(exc)
                    continue
            self.result["images_removed"].append(tag)

    def _remove_volume(self, name):
        try:
            with translate(f"volume {name}"):
                self.docker.client.volumes.get(name).remove()
        except AgentError as exc:
            if exc.code != "not_found":
                self.failures.append(exc)
            return
        self.result["volumes_removed"].append(name)

    # -- files --------------------------------------------------------------------------

    def _purge(self, deployments):
        deployments |= self._history_deployments()
        self._remove_path(os.path.join(self.cfg.apps_dir, self.uid))
        self._remove_path(repository_dir(self.cfg, self.uid))   # the private git dir (services/git.py)
        self._remove_path(os.path.join(self.cfg.deployment_dir, self.uid))
        log_dir = self.cfg.deployment_log_dir
        for pattern in (f"{self.uid}_build.log*", f"{self.uid}_deploy.log*"):
            for path in sorted(glob.glob(os.path.join(log_dir, pattern))):
                self._remove_path(path)
        for deployment in sorted(deployments):
            for suffix in ("_build.log", "_deploy.log", "_steps.json"):
                self._remove_path(os.path.join(log_dir, deployment + suffix))

    def _history_deployments(self):
        path = os.path.join(self.cfg.deployment_dir, self.uid, "build_history.json")
        try:
            with open(path, encoding="utf-8") as handle:
                entries = json.load(handle)
        except (OSError, ValueError):
            return set()
        found = {e.get("deployment_uid") for e in entries if isinstance(e, dict)} if isinstance(entries, list) else set()
        return {d for d in found if isinstance(d, str) and UID_RE.match(d)}

    def _remove_path(self, path):
        if not os.path.lexists(path):
            return
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        except OSError as exc:
            code = "permission_denied" if isinstance(exc, PermissionError) else "internal"
            self.failures.append(AgentError(code, f"cannot remove {path}: {exc.strerror or exc}"))
            return
        self.result["paths_removed"].append(path)
