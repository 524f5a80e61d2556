"""Fixtures of the proxy tests: the agent's Caddy on the private dockerd, app containers.

One proxy per module (a Caddy container starts in about a second); every test gets its own
service uids and domains, and app containers are removed after each test.
"""
import shutil
import tempfile

import pytest
from harness import free_port

from agent import config
from agent.services import Services
from agent.services.caddy.container import NAME as PROXY_NAME


class Events:
    def __init__(self):
        self.items = []

    def __call__(self, event, data):
        self.items.append((event, data))

    def of(self, event):
        return [data for name, data in self.items if name == event]


@pytest.fixture(scope="module")
def proxy_env(docker_host, docker_client, caddy_image, app_base_image, test_network):
    # A short state dir: the admin socket path must fit in sun_path (unix(7)).
    state = tempfile.mkdtemp(prefix="pxy-", dir="/tmp")
    cfg = config.defaults().replace(
        docker_host=docker_host, state_dir=state, caddy_image=caddy_image,
        caddy_http_port=free_port(), caddy_https_port=free_port(), caddy_tls_issuer="internal")
    services = Services(cfg)
    events = Events()
    services.events.target = events
    services.proxy.tls_check_delays = (0.5, 1.0, 2.0, 4.0)
    try:
        yield services, events
    finally:
        services.close()
        _remove(docker_client, PROXY_NAME)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def apps(docker_client, app_base_image, test_network):
    """apps.start(uid, version, body) -> container name serving `body` on :8080."""
    factory = AppFactory(docker_client, app_base_image, test_network)
    try:
        yield factory
    finally:
        factory.cleanup()


class AppFactory:
    def __init__(self, client, image, network):
        self.client, self.image, self.network = client, image, network
        self.names = []

    def start(self, uid, version, body, labels=None):
        name = f"pulseup-app-{uid}-v{version:04d}"
        script = f"echo {body} > /www/index.html && exec httpd -f -p 8080 -h /www"
        self.client.containers.run(
            self.image, ["sh", "-c", script], name=name, detach=True, network=self.network,
            labels={"pulseup.managed": "true", "pulseup.service_uid": uid,
                    "pulseup.lifecycle.version": str(version), **(labels or {})})
        self.names.append(name)
        return name

    def stop(self, name):
        self.client.containers.get(name).stop(timeout=5)

    def cleanup(self):
        for name in self.names:
            _remove(self.client, name)


def _remove(client, name):
    import docker.errors

    try:
        client.containers.get(name).remove(force=True)
    except docker.errors.NotFound:
        pass
