"""Session fixtures that start real services on loopback, each in its own temp dir.

Every fixture checks its prerequisites with require_service (skip locally, fail when
CI=true), starts its service, and stops it in a finally block, so a failing test never leaks
a process. Services that cannot start raise ServiceError with the tail of their log.

Fixtures: docker_host, docker_client, base_image, app_base_image, caddy_image, test_network,
caddy_server, git_server, postgres_server, mariadb_server, redis_server.
"""
import os
import sys

import pytest

# Tests here import `harness` whether or not tests/ becomes a package later.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from harness import (  # noqa: E402
    CaddyServer, DockerDaemon, GitServer, MariadbServer, PostgresServer, RedisServer,
    require_service)
from harness import images  # noqa: E402
from harness.dockerd import release_dir  # noqa: E402
from harness.process import sweep_stale_dirs  # noqa: E402

TEST_NETWORK = "pulseup-net"


def pytest_collection_modifyitems(config, items):
    """Everything under tests/integration is an integration test, marked or not."""
    for item in items:
        if str(item.path).startswith(_HERE + os.sep):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def _sweep_stale_service_dirs():
    """Remove temp dirs of earlier runs that were killed before their teardown (their
    processes already got SIGTERM through the parent-death signal)."""
    if os.geteuid() == 0:
        sweep_stale_dirs(release_dir)


def _serve(service, name, reason):
    """Generator body shared by the service fixtures: check, start, yield, always stop."""
    require_service(name, reason)
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def docker_host():
    """unix:// URL of a private dockerd (own socket, data-root, exec-root, address pool)."""
    for daemon in _serve(DockerDaemon(), "docker", "needs a private Docker engine"):
        yield daemon.host


@pytest.fixture(scope="session")
def docker_client(docker_host):
    import docker

    client = docker.DockerClient(base_url=docker_host, timeout=120)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def base_image(docker_client):
    """'pulseup-test/busybox:latest': busybox-static, root and nobody, /tmp 1777."""
    require_service("busybox", "the test images are made from busybox-static")
    return images.build_base_image(docker_client)


@pytest.fixture(scope="session")
def app_base_image(docker_client):
    """'pulseup-test/appbase:latest': the base plus /www, CMD httpd -f -p 8080 -h /www."""
    require_service("busybox", "the test images are made from busybox-static")
    return images.build_app_base_image(docker_client)


@pytest.fixture(scope="session")
def caddy_image(docker_client):
    """'pulseup-test/caddy:latest': ENTRYPOINT /usr/bin/caddy, CMD run the default
    Caddyfile (:80 answers 'pulseup-test caddy'); command=["version"] prints the version."""
    require_service("busybox", "the test images are made from busybox-static")
    require_service("caddy", "the Caddy image copies Debian's caddy binary")
    return images.build_caddy_image(docker_client)


@pytest.fixture(scope="session")
def test_network(docker_client):
    """Name of a user-defined bridge network: with --bridge=none, ports publish only there."""
    # an agent of this session may have created it first (it ensures pulseup-net itself):
    # reuse it, or the engine would make a second network of the same name
    existing = [n for n in docker_client.networks.list(names=[TEST_NETWORK]) if n.name == TEST_NETWORK]
    network = existing[0] if existing else docker_client.networks.create(TEST_NETWORK, driver="bridge")
    try:
        yield TEST_NETWORK
    finally:
        network.reload()
        for container in network.containers:
            network.disconnect(container, force=True)
        network.remove()


@pytest.fixture(scope="session")
def caddy_server():
    """Host caddy: .admin_url, .http_port, .https_port, .base_config(servers), .load(config)."""
    yield from _serve(CaddyServer(), "caddy", "needs a host Caddy")


@pytest.fixture(scope="session")
def git_server():
    """Token-protected smart-HTTP git: .base_url, .token, .repo_url, .repo_path, .commit_sha,
    .add_repo(name, files, branch), .commit(...), .clone_env(password)."""
    yield from _serve(GitServer(), "git", "needs git http-backend")


@pytest.fixture(scope="session")
def postgres_server():
    """.host, .port, .user (superuser), .password, .database, .url, .bin_dir, .psql(sql)."""
    yield from _serve(PostgresServer(), "postgres", "needs a PostgreSQL server")


@pytest.fixture(scope="session")
def mariadb_server():
    """.host, .port, .user (all privileges), .password, .database, .sql(sql), .root_sql(sql)."""
    yield from _serve(MariadbServer(), "mariadb", "needs a MariaDB server")


@pytest.fixture(scope="session")
def redis_server():
    """.host, .port, .user ('default'), .password, .cli(*args)."""
    yield from _serve(RedisServer(), "redis", "needs a Redis server")
