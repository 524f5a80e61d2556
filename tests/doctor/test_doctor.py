"""`pulseup-agent doctor` against a good set-up and set-ups broken in one place each:
the broken part's check fails, every other check passes (or is skipped because of it)."""

import datetime
import email.utils
import json
import os
import shutil
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from gevent import socket, ssl
from gevent.server import StreamServer

from agent.devserver.ca import CertificateAuthority
from agent.devserver.server import DevServer
from agent.doctor import run_checks
from tests.integration.harness import free_port

ALL = {"config", "certificate", "websocket_url", "api_base_url", "clock", "supervisor", "worker",
       "docker", "caddy", "state_dir", "backup_dir", "outbox"}


def verdicts(cfg):
    return {result.name: result for result in run_checks(cfg)}


def failing(results):
    return {name for name, result in results.items() if not result.ok}


def assert_only(results, broken, skipped=()):
    assert set(results) == ALL
    assert failing(results) == set(broken), {n: r.detail for n, r in results.items() if not r.ok}
    assert {n for n, r in results.items() if r.skipped} == set(skipped), results
    for name in broken:
        assert results[name].hint, name


def test_good_setup_passes_every_check(setup):
    results = verdicts(setup.cfg())
    assert_only(results, set())
    assert "overlay2" in results["docker"].detail or "vfs" in results["docker"].detail
    assert "answers the IPC protocol" in results["supervisor"].detail
    assert "connected" in results["worker"].detail
    assert "expires" in results["certificate"].detail
    assert "no pulseup-caddy container yet" in results["caddy"].detail


def test_cli_json_and_exit_code(setup):
    argv = [sys.executable, "-m", "agent", "--config", setup.write_config(), "doctor", "--json"]
    good = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stdout + good.stderr
    checks = json.loads(good.stdout)["checks"]
    assert {c["name"] for c in checks} == ALL
    assert all(set(c) == {"name", "ok", "detail", "hint"} and c["ok"] is True for c in checks)

    setup.stop_supervisor()
    human = subprocess.run(argv[:-1], capture_output=True, text=True, timeout=120)
    assert human.returncode == 1
    assert "FAIL  supervisor" in human.stdout and "1 of 12 checks failed: supervisor" in human.stdout
    assert "-> start it" in human.stdout


def test_config_that_cannot_load_is_a_failed_check(tmp_path):
    conf = tmp_path / "agent.conf"
    conf.write_text("RECONNECT_INTERVAL=soon\n")
    done = subprocess.run([sys.executable, "-m", "agent", "--config", str(conf), "doctor", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    (check,) = json.loads(done.stdout)["checks"]
    assert check["name"] == "config" and check["ok"] is False and "RECONNECT_INTERVAL" in check["detail"]


def test_missing_websocket_url(setup):
    results = verdicts(setup.cfg(WEBSOCKET_URL="", ENROLL_CA_FILE=""))
    assert_only(results, {"config"}, skipped={"websocket_url", "api_base_url", "clock"})


# --- certificate ----------------------------------------------------------------------------

def test_certificate_from_another_ca(setup, tmp_path):
    other = DevServer(str(tmp_path / "other")).start()
    try:
        setup.enroll(server=other, cert_dir=str(tmp_path / "othercerts"))
    finally:
        other.stop()
    for name in ("agent.key", "agent.crt"):
        shutil.copy(tmp_path / "othercerts" / name, os.path.join(setup.settings["CERT_DIR"], name))
    results = verdicts(setup.cfg())
    assert_only(results, {"certificate"})
    assert "does not chain to the CA" in results["certificate"].detail


def test_wrong_ca_file_also_fails_tls(setup, tmp_path):
    other = DevServer(str(tmp_path / "other"))
    shutil.copy(other.ca_file, os.path.join(setup.settings["CERT_DIR"], "ca.crt"))
    results = verdicts(setup.cfg())
    assert_only(results, {"certificate", "websocket_url", "api_base_url"}, skipped={"clock"})
    assert "not trusted" in results["websocket_url"].detail


def test_expired_certificate(setup):
    cert_dir = setup.settings["CERT_DIR"]
    with open(os.path.join(cert_dir, "agent.key"), "rb") as handle:
        key = serialization.load_pem_private_key(handle.read(), None)
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .sign(key, None).public_bytes(serialization.Encoding.PEM).decode())
    cert = CertificateAuthority(setup.server.data_dir).sign_agent_csr(csr, "srv-expired", -3600)
    with open(os.path.join(cert_dir, "agent.crt"), "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    results = verdicts(setup.cfg())
    assert_only(results, {"certificate"})
    assert "expired" in results["certificate"].detail


def test_key_mismatch(setup):
    other = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with open(os.path.join(setup.settings["CERT_DIR"], "agent.key"), "wb") as handle:
        handle.write(other)
    results = verdicts(setup.cfg())
    assert_only(results, {"certificate"})
    assert "key mismatch" in results["certificate"].detail


def test_not_enrolled(setup):
    shutil.rmtree(setup.settings["CERT_DIR"])
    results = verdicts(setup.cfg())
    assert_only(results, {"certificate"})
    assert "not enrolled" in results["certificate"].detail


# --- control plane --------------------------------------------------------------------------

def test_unreachable_websocket_url(setup):
    results = verdicts(setup.cfg(WEBSOCKET_URL=f"wss://127.0.0.1:{free_port()}/ws/agent_v2",
                                 API_BASE_URL=setup.server.url))
    assert_only(results, {"websocket_url"})
    assert "TCP: cannot connect" in results["websocket_url"].detail


def test_unresolvable_api_host(setup):
    results = verdicts(setup.cfg(API_BASE_URL="https://pulseup-doctor-test.invalid"))
    assert_only(results, {"api_base_url"}, skipped={"clock"})
    assert "DNS: cannot resolve" in results["api_base_url"].detail


@pytest.fixture
def far_off_date_server(setup):
    """An HTTPS server with the devserver's certificate whose Date header is a day ahead."""
    ca = CertificateAuthority(setup.server.data_dir)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ca.server_cert_file, ca.server_key_file)
    date = email.utils.format_datetime(datetime.datetime.now(datetime.timezone.utc)
                                       + datetime.timedelta(days=1), usegmt=True)

    def answer(sock, _address):
        try:
            tls = context.wrap_socket(sock, server_side=True)
            tls.recv(65536)
            tls.sendall(f"HTTP/1.1 404 Not Found\r\nDate: {date}\r\nContent-Length: 0\r\n\r\n".encode())
            tls.close()
        except (OSError, ssl.SSLError):
            pass
    server = StreamServer(("127.0.0.1", 0), answer)
    server.start()
    yield f"https://127.0.0.1:{server.server_port}"
    server.stop()


def test_clock_skew_against_the_date_header(setup, far_off_date_server):
    results = verdicts(setup.cfg(API_BASE_URL=far_off_date_server))
    assert_only(results, {"clock"})
    assert "behind the control plane" in results["clock"].detail


# --- supervisor and worker ------------------------------------------------------------------

def test_supervisor_socket_missing(setup):
    setup.stop_supervisor()
    results = verdicts(setup.cfg())
    assert_only(results, {"supervisor"}, skipped={"worker"})
    assert "no socket" in results["supervisor"].detail


def test_stale_supervisor_socket(setup):
    setup.stop_supervisor()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(setup.settings["SUPERVISOR_SOCKET"])
    os.chmod(setup.settings["SUPERVISOR_SOCKET"], 0o660)
    stale.close()
    results = verdicts(setup.cfg())
    assert_only(results, {"supervisor"}, skipped={"worker"})
    assert "nobody listens" in results["supervisor"].detail


def test_world_accessible_supervisor_socket(setup):
    os.chmod(setup.settings["SUPERVISOR_SOCKET"], 0o666)
    results = verdicts(setup.cfg())
    assert_only(results, {"supervisor"}, skipped={"worker"})


def test_worker_never_reported(setup):
    setup.stop_supervisor()
    os.unlink(os.path.join(setup.root, "run", "worker-status.json"))
    setup.start_supervisor(report=False)
    results = verdicts(setup.cfg())
    assert_only(results, {"worker"})


# --- docker and caddy ---------------------------------------------------------------------

def test_docker_socket_missing(setup):
    results = verdicts(setup.cfg(DOCKER_HOST=f"unix://{setup.root}/no-docker.sock"))
    assert_only(results, {"docker"}, skipped={"caddy"})
    assert "cannot reach Docker" in results["docker"].detail


def test_caddy_container_not_running(setup, docker_host):
    import docker
    from tests.integration.harness import images

    client = docker.DockerClient(base_url=docker_host, timeout=60)
    try:
        image = images.build_base_image(client)
        container = client.containers.create(image, ["true"], name="pulseup-caddy")
        try:
            results = verdicts(setup.cfg())
            assert_only(results, {"caddy"})
            assert "pulseup-caddy is created" in results["caddy"].detail
        finally:
            container.remove(force=True)
    finally:
        client.close()


# --- disk and outbox ----------------------------------------------------------------------

def test_state_dir_not_writable_by_the_worker_user(setup):
    os.chmod(setup.settings["STATE_DIR"], 0o700)
    os.chown(setup.settings["PULSEUP_BACKUP_DIR"], 65534, 65534)
    results = verdicts(setup.cfg(WORKER_USER="nobody"))
    assert_only(results, {"state_dir"})
    assert "nobody cannot write" in results["state_dir"].detail


def test_full_state_dir(setup):
    state = setup.settings["STATE_DIR"]
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "doctor-test", state], capture_output=True)
    assert mounted.returncode == 0, mounted.stderr
    try:
        with open(os.path.join(state, "filler"), "wb") as handle:
            try:
                handle.write(b"\0" * 2 * 1024 * 1024)
            except OSError:
                pass
        results = verdicts(setup.cfg())
    finally:
        subprocess.run(["umount", "-l", state], check=True)
    assert_only(results, {"state_dir"})
    assert "free of" in results["state_dir"].detail


def test_outbox_backlog(setup):
    with open(os.path.join(setup.settings["STATE_DIR"], "outbox.journal"), "w") as handle:
        for seq in range(1, 201):
            handle.write(json.dumps({"+": seq, "f": '{"type":"event"}', "d": True, "k": None}) + "\n")
        for seq in range(1, 11):
            handle.write(json.dumps({"-": seq}) + "\n")
        handle.write('{"+": 999, "f": "torn')
    results = verdicts(setup.cfg(OUTBOX_MAX_MESSAGES="200"))
    assert_only(results, {"outbox"})
    assert "190 message(s) waiting" in results["outbox"].detail
    assert "1 torn line(s)" in results["outbox"].detail
    assert verdicts(setup.cfg())["outbox"].ok



def test_caddy_running_then_its_admin_api_gone(setup, docker_host):
    import docker

    from agent.devserver import demo_images
    from agent.services.caddy.container import NAME, ProxyContainer
    from agent.services.caddy.document import build_document
    from agent.services.docker import DockerService

    client = docker.DockerClient(base_url=docker_host, timeout=120)
    cfg = setup.cfg(CADDY_IMAGE=demo_images.caddy_image(client), CADDY_HTTP_PORT=str(free_port()),
                    CADDY_HTTPS_PORT=str(free_port()), CADDY_TLS_ISSUER="internal")
    service = DockerService(cfg)
    proxy = ProxyContainer(cfg, service, os.path.join(cfg.state_dir, "caddy"))
    try:
        proxy.prepare_dirs()        # boots with no routes, as CaddyService does before the first domain
        with open(proxy.boot_config_path, "w") as handle:
            json.dump(build_document([], "internal", cfg.caddy_https_port, cfg.caddy_http_port), handle)
        proxy.ensure()
        results = verdicts(cfg)
        assert_only(results, set())
        assert results["caddy"].detail.startswith(f"{NAME} running; admin API answers")

        os.rename(proxy.socket_path, proxy.socket_path + ".moved")
        results = verdicts(cfg)
        assert_only(results, {"caddy"})
        assert "does not answer" in results["caddy"].detail
    finally:
        client.containers.get(NAME).remove(force=True)
        service.close()
        client.close()
