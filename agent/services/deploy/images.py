"""App image names and the pruning of a service's commit-tagged images (docs/commands.md, "Docker names and labels" and "Deployments")."""

import hashlib
import re

from agent.errors import AgentError
from agent.services.docker import translate

# docker/distribution reference grammar: path components separated by [._]|__|-+
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*\Z")


def image_uid(service_uid):
    """``<image_uid>`` of docs/commands.md, "Docker names and labels": the uid itself when ``pulseup-app-<uid>`` is a valid
    repository; else lowercased, separator runs collapsed to ``-``, trailing separators
    stripped, plus a short hash of the original uid (docs/commands.md, "Docker names and labels") so two uids cannot collide."""
    if _COMPONENT.match(f"pulseup-app-{service_uid}"):
        return service_uid
    text = re.sub(r"[._-]{2,}|[._]-|-[._]", "-", service_uid.lower())
    text = re.sub(r"^[._-]+|[._-]+\Z", "", text)
    suffix = hashlib.sha256(service_uid.encode()).hexdigest()[:8]
    candidate = f"{text}-{suffix}" if text else suffix
    if not _COMPONENT.match(f"pulseup-app-{candidate}"):
        candidate = re.sub(r"[^a-z0-9]+", "-", candidate).strip("-")
    return candidate


def repository(service_uid):
    return f"pulseup-app-{image_uid(service_uid)}"


class AppImages:
    """Image housekeeping; methods raise unavailable when the engine is unreachable."""

    def __init__(self, docker):
        self.docker = docker

    def exists(self, ref):
        """True when the image reference exists locally."""
        try:
            with translate(f"image {ref}"):
                self.docker.client.images.get(ref)
        except AgentError as exc:
            if exc.code == "not_found":
                return False
            raise
        return True

    def tags(self, service_uid):
        """Every ``pulseup-app-<image_uid>:<tag>`` reference (exact repository match) with its image id."""
        repo = repository(service_uid)
        with translate("list images"):
            images = self.docker.client.images.list(name=repo)
        return [(tag, image.id) for image in images for tag in image.tags if tag.rpartition(":")[0] == repo]

    def used_image_ids(self):
        with translate("list containers"):
            return {c.attrs.get("Image") for c in self.docker.client.containers.list(all=True, ignore_removed=True)}

    def prune(self, service_uid, keep, say):
        """Remove this service's commit-tagged images that are neither in ``keep`` (history)
        nor used by a container; failures are warnings. Returns the removed references."""
        removed = []
        try:
            used = self.used_image_ids()
            for ref, image_id in self.tags(service_uid):
                if ref in keep or image_id in used:
                    continue
                with translate(f"remove image {ref}"):
                    self.docker.client.images.remove(ref, noprune=False)
                removed.append(ref)
        except AgentError as exc:
            say(f"image cleanup: {exc.message}", "WARN")
        if removed:
            say(f"removed unused images: {', '.join(removed)}")
        return removed
