"""Self-update, worker side (docs/operations.md, "Self-update";
docs/commands.md, "Agent commands").

The worker fetches the manifest at UPDATE_MANIFEST_URL and its ``.sig``,
verifies the signature before reporting anything, downloads the package
(only from the manifest's own host) into a spool directory under STATE_DIR
while hashing it, and asks the supervisor to install it with the IPC op
``agent.update.install {version, file_name}``. The supervisor re-verifies
everything on its own copy. The optional auto-update loop lives here too.
"""

import hashlib
import os
import ssl
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import gevent

from agent import __version__, log
from agent.errors import AgentError
from agent.protocol import update as manifests
from agent.protocol.ipc import OP_AGENT_UPDATE_INSTALL

_log = log.get("update")
CHUNK = 64 * 1024
TIMEOUT = 30.0


def spool_dir(cfg):
    """Where the worker leaves a verified download for the supervisor."""
    return os.path.join(cfg.state_dir, "update-spool")


class UpdateService:
    def __init__(self, cfg, ipc=None, opener=None):
        self.cfg, self.ipc = cfg, ipc
        self.opener = opener or self._default_opener()
        self.auto_check = cfg.auto_update_check
        self.auto_apply = cfg.auto_update_apply
        self._loop = None
        self._services = None

    # --- discovery ----------------------------------------------------------
    def latest(self):
        """(manifest dict, manifest bytes, signature text), signature verified.

        Raises AgentError: failed_precondition (no URL or key), unavailable
        (host unreachable or not 200), integrity_error (bad signature/manifest).
        """
        url = self.cfg.update_manifest_url
        if not url:
            raise AgentError("failed_precondition", "UPDATE_MANIFEST_URL is not set")
        key = manifests.load_public_key(self.cfg.update_public_key_file)
        body = self._get(url, manifests.MAX_MANIFEST_BYTES)
        signature = self._get(url + ".sig", 4096).decode("ascii", "replace")
        manifest = manifests.verify_manifest(body, signature, key)
        if urlsplit(manifest["url"]).hostname != urlsplit(url).hostname:
            raise AgentError("integrity_error", "update package is not on the manifest's host")
        return manifest, body, signature

    def check(self):
        """The agent.update.check reply; raises what :meth:`latest` raises."""
        manifest = self.latest()[0]
        current = manifests.parse_version(__version__)
        latest = manifests.parse_version(manifest["version"])
        return {
            "current_version": __version__,
            "update_available": bool(current and latest > current),
            "latest_version": manifest["version"], "download_url": manifest["url"],
            "checksum": manifest["sha256"], "signed_at": manifest["published_at"],
            "changelog": manifest["changelog"], "release_url": self.cfg.update_manifest_url,
        }

    # --- installation -------------------------------------------------------
    def apply(self, version=None, force=False, check=lambda: None, commit=lambda: None):
        """Download, verify and hand the package to the supervisor; the reply data.

        Raises AgentError: not_found (no such signed release), failed_precondition
        (not newer without force), integrity_error, unavailable, and what the
        supervisor's op raises. ``check`` is called between steps (cancellation),
        ``commit`` right before the supervisor is asked to install.
        """
        manifest, body, signature = self.latest()
        wanted = manifests.normalize(version) if version else manifest["version"]
        if wanted != manifest["version"]:
            raise AgentError("not_found", f"no signed release {wanted} (latest is {manifest['version']})",
                             field="version")
        current = manifests.parse_version(__version__)
        newer = current is not None and manifests.parse_version(wanted) > current
        if not newer and not version:
            return {"message": "No updates available"}
        if not newer and not force:
            raise AgentError("failed_precondition",
                             f"{wanted} is not newer than the running {__version__}; use force: true")
        check()
        file_name = self._download(manifest, body, signature, check)
        if self.ipc is None:
            raise AgentError("unavailable", "the supervisor is not reachable")
        check()
        commit()
        self.ipc.call(OP_AGENT_UPDATE_INSTALL, {"version": wanted, "file_name": file_name}, timeout=120)
        return {"message": "Update applied successfully. Agent will restart.", "version": wanted}

    def _download(self, manifest, body, signature, check):
        directory = spool_dir(self.cfg)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        file_name = os.path.basename(urlsplit(manifest["url"]).path)
        path = os.path.join(directory, file_name)
        digest, size = hashlib.sha256(), 0
        try:
            with self._open(manifest["url"]) as response, open(path + ".part", "wb") as out:
                while chunk := response.read(CHUNK):
                    size += len(chunk)
                    if size > manifest["size"]:
                        raise AgentError("integrity_error", "update package is larger than the manifest says")
                    digest.update(chunk)
                    out.write(chunk)
                    check()
            if size != manifest["size"] or digest.hexdigest() != manifest["sha256"]:
                raise AgentError("integrity_error", "update package does not match the manifest's size and sha256")
            for suffix, data in ((".manifest", body), (".manifest.sig", signature.encode())):
                with open(path + suffix, "wb") as out:
                    out.write(data)
            os.replace(path + ".part", path)
        except BaseException:
            # cancelled (GreenletExit), refused or broken: leave nothing half-written
            _remove(path + ".part")
            raise
        return file_name

    # --- HTTP ---------------------------------------------------------------
    def _default_opener(self):
        context = ssl.create_default_context()
        for extra in (os.path.join(self.cfg.cert_dir, "ca.crt"), self.cfg.server_ca_file):
            if extra and os.path.exists(extra):
                context.load_verify_locations(cafile=extra)
        return urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))

    def _open(self, url):
        if url.startswith("http://") and not self.cfg.allow_insecure_transport:
            raise AgentError("failed_precondition", f"refusing insecure {url} (ALLOW_INSECURE_TRANSPORT is false)")
        try:
            return self.opener.open(url, timeout=TIMEOUT)
        except urllib.error.HTTPError as exc:
            raise AgentError("unavailable", f"update host answered HTTP {exc.code} for {url}") from None
        except (OSError, urllib.error.URLError) as exc:
            raise AgentError("unavailable", f"update host unreachable: {exc}") from None

    def _get(self, url, limit):
        with self._open(url) as response:
            data = response.read(limit + 1)
        if len(data) > limit:
            raise AgentError("integrity_error", f"{url} is larger than {limit} bytes")
        return data

    # --- auto-update (AUTO_UPDATE_*, agent.config_updated) --------------------
    def start(self, services):
        self._services = services
        self._reschedule()

    def set_auto(self, enabled):
        """agent.config_updated: both switches, in memory until restart."""
        self.auto_check = self.auto_apply = bool(enabled)
        self._reschedule()

    def _reschedule(self):
        if self._loop is not None:
            self._loop.kill(block=False)
            self._loop = None
        if self.auto_check and self._services is not None:
            self._loop = self._services.spawn("auto-update", self._auto_loop)

    def _auto_loop(self):
        while True:
            gevent.sleep(self.cfg.auto_update_interval)
            try:
                found = self.check()
                if found["update_available"] and self.auto_apply:
                    _log.info("auto-update to %s", found["latest_version"])
                    self.apply()
            except AgentError as exc:
                _log.warning("auto-update check failed: %s (%s)", exc.message, exc.code)

    def close(self):
        if self._loop is not None:
            self._loop.kill(block=False)


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
