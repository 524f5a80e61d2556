"""The console: `python -m agent devserver` as a subprocess, and the client subcommands."""

import json
import os
import subprocess
import sys
import types

import gevent
import pytest

from agent.devserver.cli import main
from devserver_client import Identity, TestAgent, make_csr, post_enroll

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def served(tmp_path):
    """A dev server subprocess; yields (info dict from its banner, data dir)."""
    data_dir = str(tmp_path / "dev")
    proc = subprocess.Popen([sys.executable, "-m", "agent", "devserver", "--data-dir", data_dir,
                             "--listen", "127.0.0.1:0"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    info = {}
    try:
        with gevent.Timeout(20):
            for line in proc.stdout:
                if line.startswith("  WEBSOCKET_URL="):
                    info["command"] = line.strip()
                    break
                key, sep, value = line.strip().partition("=")
                if sep and key.isupper():
                    info[key] = value
        yield info, data_dir
    finally:
        proc.terminate()
        proc.wait(10)


def test_banner_prints_everything_an_agent_needs(served):
    info, data_dir = served
    assert info["URL"].startswith("https://127.0.0.1:")
    assert info["WEBSOCKET_URL"] == "wss" + info["URL"][5:] + "/ws/agent_v2"
    assert info["ENROLL_CA_PIN"].startswith("sha256:") and len(info["ENROLL_CA_PIN"]) == 71
    assert info["CA_FILE"] == os.path.join(data_dir, "ca.crt")
    assert info["command"] == ("WEBSOCKET_URL=%s JOIN_TOKEN=%s ENROLL_CA_PIN=%s "
                               "pulseup-agent worker" % (info["WEBSOCKET_URL"],
                                                         info["JOIN_TOKEN"],
                                                         info["ENROLL_CA_PIN"]))


def test_client_subcommands(served, tmp_path, capsys):
    info, data_dir = served
    flags = ["--data-dir", data_dir, "--listen", info["URL"][len("https://"):]]
    remote = types.SimpleNamespace(url=info["URL"], ws_url=info["WEBSOCKET_URL"],
                                   ca_file=info["CA_FILE"])
    assert main(flags + ["token"]) == 0
    token = capsys.readouterr().out.strip()
    key, csr = make_csr()
    resp = post_enroll(remote, token, csr)
    assert resp.status_code == 200, resp.text
    ident = Identity(key, resp.json(), str(tmp_path / "certs"))
    client = TestAgent(remote, ident)
    client.authenticate()
    client.serve(lambda frame: {"success": True, "data": frame["data"], "error": "",
                                "code": ""})
    assert main(flags + ["call", ident.server_uid, "agent.ping", '{"a": 1}']) == 0
    assert json.loads(capsys.readouterr().out)["data"] == {"a": 1}
    assert main(flags + ["agents"]) == 0
    listed = json.loads(capsys.readouterr().out)["agents"]
    assert listed[0]["server_uid"] == ident.server_uid and listed[0]["connected"]
    assert main(flags + ["call", "nobody", "x"]) == 1
    client.close()
