"""Enrollment against the real devserver over real TLS (docs/protocol.md, "Enrollment and certificates")."""

import logging
import os
import pwd
import stat

import gevent
import pytest
from cryptography.hazmat.primitives import serialization

from agent import exitcodes
from agent.devserver.ca import CertificateAuthority
from agent.worker import enroll as exchanges
from agent.worker.identity import EnrollmentError, enroll, ensure_identity, load_identity
from tests.identity.idsupport import authenticate, cert_dir_entries


def test_enroll_with_pin_stores_an_identity_that_authenticates(server, cfg, hardware_info, caplog):
    caplog.set_level(logging.INFO, logger="agent")
    token = server.create_token()
    identity = enroll(cfg, token, hardware_info)
    assert identity.server_uid.startswith("srv-")
    assert cert_dir_entries(cfg) == ["agent.crt", "agent.key", "ca.crt", "enrollment.json"]
    assert stat.S_IMODE(os.stat(os.path.join(cfg.cert_dir, "agent.key")).st_mode) == 0o600
    for name in cert_dir_entries(cfg):
        with open(os.path.join(cfg.cert_dir, name), "rb") as handle:
            assert token.encode() not in handle.read()
    assert token not in caplog.text
    assert "can be removed from the config" in caplog.text
    loaded = load_identity(cfg)
    assert (loaded.server_uid, loaded.serial) == (identity.server_uid, identity.serial)
    assert loaded.ca_pem == server.ca_pem
    reply = authenticate(server, loaded)
    assert reply["success"] is True and reply["server_uid"] == identity.server_uid


def test_enroll_trusting_a_ca_file(server, cfg, hardware_info):
    cfg = cfg.replace(enroll_ca_pin=None, enroll_ca_file=server.ca_file)
    identity = enroll(cfg, server.create_token(), hardware_info)
    assert authenticate(server, identity)["success"] is True


def stranger_ca(tmp_path):
    """Another control plane's CA."""
    os.makedirs(tmp_path / "stranger", mode=0o700)
    return CertificateAuthority(str(tmp_path / "stranger"))


def assert_refused(cfg, token, hardware_info, message, exit_code=exitcodes.ENROLL_FAILED):
    with pytest.raises(EnrollmentError, match=message) as info:
        enroll(cfg, token, hardware_info)
    assert info.value.exit_code == exit_code
    assert token not in info.value.message
    assert cert_dir_entries(cfg) == []


def test_reused_token_is_refused(server, cfg, hardware_info, tmp_path):
    token = server.create_token()
    enroll(cfg.replace(cert_dir=str(tmp_path / "first")), token, hardware_info)
    assert_refused(cfg, token, hardware_info, "^join token refused: Invalid or used token$")


def test_expired_token_is_refused(server, cfg, hardware_info):
    token = server.create_token(ttl_s=1)
    gevent.sleep(1.5)
    assert_refused(cfg, token, hardware_info, "^join token refused: Token expired$")


def test_wrong_ca_file_is_refused_and_keeps_the_token(server, cfg, hardware_info, tmp_path):
    stranger = stranger_ca(tmp_path)
    token = server.create_token()
    assert_refused(cfg.replace(enroll_ca_pin=None, enroll_ca_file=stranger.ca_file), token, hardware_info,
                   "TLS verification of 127.0.0.1 failed: .*ENROLL_CA_FILE")
    assert enroll(cfg, token, hardware_info).server_uid      # the token was never sent


def test_wrong_pin_is_refused_and_keeps_the_token(server, cfg, hardware_info, tmp_path):
    stranger = stranger_ca(tmp_path)
    token = server.create_token()
    assert_refused(cfg.replace(enroll_ca_pin=stranger.pin), token, hardware_info,
                   f"CA pin mismatch: the server's CA is {server.ca_pin}, ENROLL_CA_PIN is {stranger.pin}")
    assert enroll(cfg, token, hardware_info).server_uid


def test_system_trust_store_does_not_know_the_dev_ca(server, cfg, hardware_info):
    assert_refused(cfg.replace(enroll_ca_pin=None), server.create_token(), hardware_info,
                   "TLS verification of 127.0.0.1 failed")


def test_certificate_not_matching_the_key_is_refused(server, cfg, hardware_info, monkeypatch):
    real_post = exchanges.post_json

    def swap_certificate(url, payload, context=None, timeout=exchanges.TIMEOUT):
        status, body = real_post(url, payload, context, timeout)
        other_key, other_csr = exchanges.new_key_and_csr()
        forged = server.ca.sign_agent_csr(other_csr, body["server_uid"], 3600)
        body["certificate_pem"] = forged.public_bytes(serialization.Encoding.PEM).decode()
        return status, body

    monkeypatch.setattr(exchanges, "post_json", swap_certificate)
    assert_refused(cfg, server.create_token(), hardware_info,
                   "the server returned an unusable certificate: the certificate does not match the agent's key")


def test_unreachable_server_is_a_transient_failure(server, cfg, hardware_info):
    cfg = cfg.replace(enroll_ca_pin=None, enroll_ca_file=server.ca_file)
    server.stop()
    assert_refused(cfg, "some-token", hardware_info, "cannot reach 127.0.0.1", exitcodes.FAILURE)


def test_ensure_identity_enrolls_once(server, cfg, hardware_info):
    cfg = cfg.replace(join_token=server.create_token())
    calls = []
    first = ensure_identity(cfg, lambda: calls.append(1) or hardware_info)
    second = ensure_identity(cfg, lambda: calls.append(1) or hardware_info)
    assert first.serial == second.serial and calls == [1]


def test_enroll_command_hands_the_files_to_the_worker_user(server, cfg, tmp_path, capsys):
    nobody = pwd.getpwnam("nobody")
    token_file = tmp_path / "token"
    token_file.write_text(server.create_token() + "\n")
    cfg = cfg.replace(worker_user="nobody")
    assert exchanges.enroll_main(cfg, join_token_file=str(token_file)) == exitcodes.OK
    out = capsys.readouterr().out
    identity = load_identity(cfg)
    assert f"enrolled: server_uid {identity.server_uid}, certificate serial {identity.serial}" in out
    if os.geteuid() == 0:
        for path in [cfg.cert_dir] + [os.path.join(cfg.cert_dir, n) for n in os.listdir(cfg.cert_dir)]:
            assert (os.stat(path).st_uid, os.stat(path).st_gid) == (nobody.pw_uid, nobody.pw_gid)
    # the token is used up; a second run reports the identity instead of failing
    assert exchanges.enroll_main(cfg, join_token_file=str(token_file)) == exitcodes.OK
    assert "already enrolled" in capsys.readouterr().out


def test_enroll_command_reports_a_refusal(server, cfg, capsys):
    cfg = cfg.replace(join_token="not-a-real-token")
    assert exchanges.enroll_main(cfg) == exitcodes.ENROLL_FAILED
    assert "join token refused: Invalid or used token" in capsys.readouterr().err
    assert cert_dir_entries(cfg) == []


def test_enroll_cli_reads_the_token_from_stdin(server, cfg):
    import subprocess
    import sys
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "WEBSOCKET_URL": server.ws_url,
           "CERT_DIR": cfg.cert_dir, "ENROLL_CA_PIN": server.ca_pin, "WORKER_USER": "nobody",
           "LOG_FORMAT": "text"}
    empty = str(cfg.cert_dir) + ".conf"
    open(empty, "w").close()   # an explicit empty config: never the host's /etc/pulseup-agent/config
    enroll_cmd = [sys.executable, "-m", "agent", "--config", empty, "enroll", "--join-token-file", "-"]
    token = server.create_token()
    result = subprocess.run(enroll_cmd,
                            input=token + "\n", env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    identity = load_identity(cfg)
    assert f"server_uid {identity.server_uid}" in result.stdout
    assert token not in result.stdout + result.stderr
    again = subprocess.run(enroll_cmd,
                           input="", env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "already enrolled" in again.stdout
    env.pop("WORKER_USER")
    os.rename(cfg.cert_dir, cfg.cert_dir + ".old")
    refused = subprocess.run(enroll_cmd,
                             input=token + "\n", env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == exitcodes.ENROLL_FAILED
    assert "join token refused: Invalid or used token" in refused.stderr
