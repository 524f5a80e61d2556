"""A host Caddy with its admin API on a free loopback port (docs/hosts.md, "Caddy").

Caddy keeps certificates, autosaved config and its local CA under XDG_DATA_HOME,
XDG_CONFIG_HOME and HOME: all three point into our temp dir so parallel sessions and the
machine's own Caddy never share state.
"""
import json
import os
import shutil
import urllib.request

from .process import ManagedProcess, free_port, make_tempdir, wait_until

START_TIMEOUT = 30
# Loopback only: never let an http_proxy from the environment in between.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class CaddyServer:
    """Attributes: admin_url, admin_port, http_port, https_port, dir, log_path.

    http_port/https_port are reserved for the configs tests load: Caddy listens on them only
    once a loaded config has servers there. `base_config()` gives a config skeleton that
    keeps the admin endpoint where it is (a POST /load without "admin" would move it to
    Caddy's default localhost:2019).
    """

    def __init__(self):
        self.dir = None
        self.process = None
        self.admin_port = None
        self.http_port = None
        self.https_port = None

    @property
    def admin_url(self):
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def log_path(self):
        return os.path.join(self.dir, "caddy.log")

    def admin_config(self):
        return {"listen": f"127.0.0.1:{self.admin_port}"}

    def base_config(self, servers=None):
        """A full config for POST /load: our admin endpoint, local CA not installed in the
        host trust store, http/https ports set so automatic HTTPS never wants 80/443."""
        return {
            "admin": self.admin_config(),
            "apps": {
                "http": {"http_port": self.http_port, "https_port": self.https_port,
                         "servers": servers or {}},
                "pki": {"certificate_authorities": {"local": {"install_trust": False}}},
            },
        }

    def start(self):
        self.dir = make_tempdir("caddy")
        self.admin_port, self.http_port, self.https_port = free_port(), free_port(), free_port()
        config_path = os.path.join(self.dir, "init.json")
        with open(config_path, "w") as f:
            json.dump({"admin": self.admin_config()}, f)
        self.process = ManagedProcess(
            "caddy", ["caddy", "run", "--config", config_path], self.log_path,
            env=self._env(), cwd=self.dir)
        try:
            self.process.start()
            wait_until(self._admin_ready, "caddy admin API", timeout=START_TIMEOUT,
                       process=self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def _env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "CADDY"))}
        env.update(HOME=os.path.join(self.dir, "home"),
                   XDG_DATA_HOME=os.path.join(self.dir, "data"),
                   XDG_CONFIG_HOME=os.path.join(self.dir, "config"))
        for key in ("HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
            os.makedirs(env[key], exist_ok=True)
        return env

    def _admin_ready(self):
        with _OPENER.open(self.admin_url + "/config/", timeout=2) as resp:
            return resp.status == 200

    def load(self, config):
        """POST /load; raises urllib.error.HTTPError (with Caddy's message) on a 4xx/5xx."""
        req = urllib.request.Request(self.admin_url + "/load", data=json.dumps(config).encode(),
                                     headers={"Content-Type": "application/json"})
        with _OPENER.open(req, timeout=30) as resp:
            return resp.status

    def stop(self):
        if self.process is not None:
            self.process.stop()
            self.process = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
