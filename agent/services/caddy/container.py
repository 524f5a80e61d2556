"""The managed proxy container ``pulseup-caddy`` (docs/commands.md, "Docker names and labels" and "Domains and the proxy").

It runs ``CADDY_IMAGE`` as the worker's uid:gid on ``pulseup-net``, publishes
``CADDY_HTTP_PORT``/``CADDY_HTTPS_PORT`` on its 80/443, and mounts three directories of
``STATE_DIR/caddy``: ``config`` (its boot document, ``/etc/caddy/caddy.json``), ``data``
(certificates and the local CA, kept across re-creations) and ``run`` (0750, the admin
socket). A container whose image, user, ports or mounts differ from the settings is
recreated; a legacy ``caddy`` container labelled ``pulseup.component=caddy`` is replaced;
any other container is left alone.
"""

import os
import time

import gevent

from agent import log
from agent.errors import AgentError
from agent.services.docker import sdk
from agent.services.docker import (
    COMPONENT, DEPLOYMENT_UID, MANAGED, NETWORK, SERVICE_UID, VERSION, image_present, labels_of,
    state_of, translate)

NAME = "pulseup-caddy"
LEGACY_NAME = "caddy"
FINAL_NAME = "pulseup.lifecycle.final_name"
LABELS = {MANAGED: "true", SERVICE_UID: "svc_pulseup_caddy", DEPLOYMENT_UID: "dep_pulseup_caddy",
          VERSION: "1", FINAL_NAME: NAME, COMPONENT: "caddy"}
BOOT_CONFIG = "/etc/caddy/caddy.json"
# Caddy keeps certificates under XDG_DATA_HOME; everything it writes stays in /data.
ENVIRONMENT = {"XDG_DATA_HOME": "/data", "XDG_CONFIG_HOME": "/data/config", "HOME": "/data"}

_log = log.get("caddy")


class ProxyContainer:
    """Create, recreate and start ``pulseup-caddy``. Methods raise AgentError
    (``unavailable`` when Docker or the proxy cannot be reached, ``conflict`` when a
    foreign container holds the name, ``failed_precondition`` for unwritable directories)."""

    def __init__(self, cfg, docker, caddy_dir):
        self.cfg = cfg
        self.docker = docker
        self.caddy_dir = caddy_dir
        self.host_dir = cfg.pulseup_caddy_host_path or caddy_dir

    @property
    def socket_path(self):
        return os.path.join(self.caddy_dir, "run", "admin.sock")

    @property
    def boot_config_path(self):
        return os.path.join(self.caddy_dir, "config", "caddy.json")

    def prepare_dirs(self):
        """Create config/, data/ (0700) and run/ (0750); raises failed_precondition."""
        try:
            for name, mode in (("config", 0o700), ("data", 0o700), ("run", 0o750)):
                path = os.path.join(self.caddy_dir, name)
                os.makedirs(path, mode=mode, exist_ok=True)
                os.chmod(path, mode)
        except OSError as exc:
            raise AgentError("failed_precondition",
                             f"cannot prepare {self.caddy_dir}: {exc.strerror}") from exc

    def desired(self):
        """What the container must look like: image, user, port bindings, mounts."""
        return {
            "image": self.cfg.caddy_image,
            "user": f"{os.getuid()}:{os.getgid()}",
            "ports": {"80/tcp": str(self.cfg.caddy_http_port),
                      "443/tcp": str(self.cfg.caddy_https_port)},
            "mounts": {os.path.join(self.host_dir, "config"): "/etc/caddy",
                       os.path.join(self.host_dir, "data"): "/data",
                       os.path.join(self.host_dir, "run"): "/run/caddy"},
        }

    def matches(self, container):
        """True when an existing container has the image, user, ports and mounts wanted."""
        want = self.desired()
        attrs = container.attrs
        config, host = attrs.get("Config") or {}, attrs.get("HostConfig") or {}
        bindings = {port: (entries or [{}])[0].get("HostPort")
                    for port, entries in (host.get("PortBindings") or {}).items()}
        mounts = {m.get("Source"): m.get("Destination") for m in attrs.get("Mounts") or ()}
        return (config.get("Image") == want["image"] and config.get("User") == want["user"]
                and bindings == want["ports"] and mounts == want["mounts"]
                and labels_of(container).get(COMPONENT) == "caddy")

    def ensure(self, wait_timeout=30.0):
        """The running, configured proxy container; returns (container, fresh) where
        ``fresh`` means it was just created or started and should get the config again."""
        self.prepare_dirs()
        self.docker.ensure_network()
        self._replace_legacy()
        container = self.docker.find_container(NAME)
        if container is not None and labels_of(container).get(COMPONENT) != "caddy":
            raise AgentError("conflict", f"a container named {NAME} exists that is not "
                             "PulseUp's proxy; remove or rename it")
        fresh = False
        if container is not None and not self.matches(container):
            _log.info("recreating %s: image, user, ports or mounts changed", NAME)
            self._remove(container)
            container = None
        if container is None:
            container, fresh = self._create(), True
        if state_of(container) == "paused":
            # paused is not stopped: its admin socket is live; starting it would unlink the socket
            _log.info("unpausing %s", NAME)
            with translate(f"unpause {NAME}"):
                container.unpause()
            container.reload()
            fresh = True
        elif state_of(container) != "running":
            self._start(container)
            fresh = True
        if fresh:
            self.wait_ready(container, wait_timeout)
        return container, fresh

    def _replace_legacy(self):
        legacy = self.docker.find_container(LEGACY_NAME)
        if legacy is not None and labels_of(legacy).get(COMPONENT) == "caddy":
            _log.info("replacing the legacy proxy container %s (its data is kept)", LEGACY_NAME)
            self._remove(legacy)

    def _remove(self, container):
        with translate(f"container {container.name}"):
            container.remove(force=True)

    def _create(self):
        want = self.desired()
        self._ensure_image(want["image"])
        with translate(f"container {NAME}"):
            return self.docker.client.containers.create(
                want["image"], ["run", "--config", BOOT_CONFIG], entrypoint=["caddy"],
                name=NAME, user=want["user"], labels=dict(LABELS), environment=ENVIRONMENT,
                ports={port: int(host) for port, host in want["ports"].items()},
                volumes={src: {"bind": dst, "mode": "rw"} for src, dst in want["mounts"].items()},
                restart_policy={"Name": "unless-stopped"}, network=NETWORK,
                log_config=sdk.bounded_logs())

    def _ensure_image(self, image):
        if image_present(self.docker.client.api, image, f"image {image}"):
            return
        _log.info("pulling the proxy image %s", image)
        with translate(f"image {image}"):
            self.docker.client.images.pull(image)

    def _start(self, container):
        # A socket file left by a previous run would make Caddy's listen fail.
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise AgentError("failed_precondition", f"cannot remove {self.socket_path}: "
                             f"{exc.strerror}") from exc
        with translate(f"container {NAME}"):
            container.start()

    def wait_ready(self, container, timeout):
        """Wait until the admin socket answers; raises unavailable with the log tail."""
        from agent.services.caddy.admin import AdminClient

        admin = AdminClient(self.socket_path, timeout=2.0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if admin.ready():
                return
            with translate(f"container {NAME}"):
                container.reload()
            if state_of(container) in ("exited", "dead"):
                break
            gevent.sleep(0.1)
        raise AgentError("unavailable", f"proxy did not become ready: {self._log_tail(container)}")

    def _log_tail(self, container):
        try:
            with translate(f"container {NAME}"):
                text = container.logs(tail=20).decode("utf-8", "replace")
        except AgentError as exc:
            return exc.message
        return text.strip()[-2000:] or f"state {state_of(container)}"
