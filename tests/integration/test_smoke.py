"""Smoke tests of the integration harness: each fixture's service really works.

They use the services the way the agent and its tests will: containers through the SDK, git
through a plain `git clone`, databases through their CLI clients with user and password over
TCP, Caddy through its admin API.
"""
import os
import subprocess
import time
import uuid

import pytest
import requests

from harness import free_port

pytestmark = pytest.mark.integration

# Loopback only: ignore any proxy settings from the environment.
HTTP = requests.Session()
HTTP.trust_env = False


def _run_container(client, image, command, **kwargs):
    return client.containers.run(image, command, remove=True, **kwargs).decode()


def _get_until(url, expect_status=200, timeout=30, **kwargs):
    """GET url until it answers expect_status (a fresh server may still be starting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            resp = HTTP.get(url, timeout=5, **kwargs)
            if resp.status_code == expect_status:
                return resp
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            return resp
        time.sleep(0.1)


# --- Docker -------------------------------------------------------------------------------

def test_container_from_base_image_prints(docker_client, base_image):
    out = _run_container(docker_client, base_image,
                         ["sh", "-c", "echo hello from busybox; id -u nobody; stat -c %a /tmp"])
    assert out.split() == ["hello", "from", "busybox", "65534", "1777"]


def test_app_base_image_has_http_applets(docker_client, app_base_image):
    out = _run_container(docker_client, app_base_image,
                         ["sh", "-c", "for a in httpd sh nc wget; do command -v $a; done"])
    assert len(out.split()) == 4


def test_caddy_image_runs(docker_client, caddy_image):
    host = subprocess.run(["caddy", "version"], capture_output=True, text=True, check=True)
    assert _run_container(docker_client, caddy_image, ["version"]) == host.stdout


def test_published_port_on_test_network(docker_client, app_base_image, test_network):
    port = free_port()
    container = docker_client.containers.run(
        app_base_image,
        ["sh", "-c", "echo published-ok > /www/index.html && exec httpd -f -p 8080 -h /www"],
        detach=True, network=test_network, ports={"8080/tcp": ("127.0.0.1", port)})
    try:
        resp = _get_until(f"http://127.0.0.1:{port}/")
        assert resp.status_code == 200
        assert resp.text == "published-ok\n"
    finally:
        container.remove(force=True)


# --- Git ----------------------------------------------------------------------------------

def _clone(git_server, url, dest, password=None, extra=()):
    return subprocess.run(["git", *extra, "clone", "-q", url, str(dest)],
                          env=git_server.clone_env(password), capture_output=True, text=True,
                          timeout=60)


def test_git_clone_with_token_via_askpass(git_server, tmp_path):
    result = _clone(git_server, git_server.repo_url, tmp_path / "app")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "app" / "index.html").read_text() == "hello from pulseup\n"
    head = subprocess.run(["git", "-C", str(tmp_path / "app"), "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert head == git_server.commit_sha


def test_git_clone_with_bearer_header(git_server, tmp_path):
    header = f"http.extraHeader=Authorization: Bearer {git_server.token}"
    result = _clone(git_server, git_server.repo_url, tmp_path / "app", password="unused",
                    extra=("-c", header))
    assert result.returncode == 0, result.stderr
    assert "pulseup-test/appbase" in (tmp_path / "app" / "Dockerfile").read_text()


def test_git_clone_with_wrong_token_is_refused(git_server, tmp_path):
    started = time.monotonic()
    result = _clone(git_server, git_server.repo_url, tmp_path / "app", password="wrong")
    assert result.returncode != 0
    assert "Authentication failed" in result.stderr or "401" in result.stderr, result.stderr
    assert time.monotonic() - started < 30  # refused, not stuck on a prompt


def test_git_add_repo_on_another_branch(git_server, tmp_path):
    url, sha = git_server.add_repo("extra", {"a/b.txt": b"bytes\n"}, branch="release")
    result = _clone(git_server, url, tmp_path / "extra")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "extra" / "a" / "b.txt").read_bytes() == b"bytes\n"
    assert len(sha) == 40


def test_seeded_repo_builds_and_serves(docker_client, app_base_image, test_network,
                                       git_server, tmp_path):
    result = _clone(git_server, git_server.repo_url, tmp_path / "app")
    assert result.returncode == 0, result.stderr
    tag = f"pulseup-test/smoke-{uuid.uuid4().hex[:8]}:latest"
    docker_client.images.build(path=str(tmp_path / "app"), tag=tag, pull=False, rm=True)
    port = free_port()
    container = docker_client.containers.run(tag, detach=True, network=test_network,
                                             ports={"8080/tcp": ("127.0.0.1", port)})
    try:
        assert _get_until(f"http://127.0.0.1:{port}/").text == "hello from pulseup\n"
    finally:
        container.remove(force=True)


# --- Databases ----------------------------------------------------------------------------

def _cli(argv, **env):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, **env))


def test_postgres_query_with_password(postgres_server):
    pg = postgres_server
    argv = ["psql", "-X", "-A", "-t", "-h", pg.host, "-p", pg.port, "-U", pg.user, "-d",
            pg.database, "-c", "SELECT current_database() || ' ' || current_user"]
    result = _cli(argv, PGPASSWORD=pg.password)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{pg.database} {pg.user}"
    assert _cli(argv, PGPASSWORD="wrong").returncode != 0


def test_mariadb_query_with_password(mariadb_server):
    db = mariadb_server
    argv = ["mariadb", "--no-defaults", "--protocol=TCP", "-h", db.host, "-P", db.port,
            "-u", db.user, "-N", "-B", db.database, "-e", "SELECT DATABASE(), CURRENT_USER()"]
    result = _cli(argv, MYSQL_PWD=db.password)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [db.database, f"{db.user}@%"]
    assert _cli(argv, MYSQL_PWD="wrong").returncode != 0


def test_redis_set_get_with_password(redis_server):
    r = redis_server
    base = ["redis-cli", "--no-auth-warning", "-h", r.host, "-p", r.port, "--user", r.user,
            "--pass", r.password]
    assert _cli([*base, "SET", "smoke", "ok"]).stdout.strip() == "OK"
    assert _cli([*base, "GET", "smoke"]).stdout.strip() == "ok"
    refused = _cli(["redis-cli", "-h", r.host, "-p", r.port, "GET", "smoke"])
    assert "NOAUTH" in refused.stdout + refused.stderr


# --- Caddy --------------------------------------------------------------------------------

def test_caddy_serves_a_loaded_route(caddy_server):
    routes = [
        {"match": [{"host": ["smoke.test"]}],
         "handle": [{"handler": "static_response", "body": "smoke route ok"}],
         "terminal": True},
        # A Host matching no route gets an empty 200 otherwise (docs/hosts.md, "Caddy").
        {"handle": [{"handler": "static_response", "status_code": 404}], "terminal": True},
    ]
    server = {"listen": [f"127.0.0.1:{caddy_server.http_port}"], "routes": routes,
              "automatic_https": {"disable": True}}
    assert caddy_server.load(caddy_server.base_config({"smoke": server})) == 200
    url = f"http://127.0.0.1:{caddy_server.http_port}/"
    resp = _get_until(url, headers={"Host": "smoke.test"})
    assert resp.text == "smoke route ok"
    assert HTTP.get(url, headers={"Host": "other.test"}, timeout=5).status_code == 404
    # The admin endpoint stayed where the fixture put it.
    assert HTTP.get(caddy_server.admin_url + "/config/", timeout=5).status_code == 200
