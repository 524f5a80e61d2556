"""Self-update, supervisor side: agent.update.install's checks on its own copy, and the helper."""

import base64
import hashlib
import json
import os
import subprocess
import threading
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent import config
from agent.errors import AgentError
from agent.protocol import update as manifests
from agent.supervisor import update
from agent.supervisor.ops import Call, Host
from agent.supervisor.seam import HostSeam, RunResult

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the update key must be root-owned")
FILE = "pulseup-agent_0.2.0_amd64.deb"
PACKAGE = b"\x7fpackage bytes" * 1000


class DpkgSeam(HostSeam):
    """dpkg-query answers ``installed``; dpkg --compare-versions is the real one; spawns are recorded."""

    def __init__(self, installed):
        self.installed, self.spawned = installed, []

    def run(self, argv, timeout=None, env=None):
        if argv[0] == "dpkg-query":
            return RunResult(0, self.installed, "")
        return RunResult(subprocess.run(argv).returncode, "", "")

    def spawn_detached(self, argv):
        self.spawned.append(list(argv))
        return 4242


@pytest.fixture
def env(tmp_path):
    key = ed25519.Ed25519PrivateKey.generate()
    # the raw form of the key file (base64 of 32 bytes); the worker tests use PEM
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    (tmp_path / "update.pub").write_bytes(base64.b64encode(raw) + b"\n")
    cfg = config.defaults().replace(state_dir=str(tmp_path / "state"),
                                    update_public_key_file=str(tmp_path / "update.pub"),
                                    supervisor_socket=str(tmp_path / "run" / "supervisor.sock"))
    store = tmp_path / "store"
    store.mkdir()
    (store / "pulseup-agent_0.1.0_amd64.deb").write_bytes(b"previous")
    (tmp_path / "state" / "update-spool").mkdir(parents=True)
    return {"key": key, "cfg": cfg, "store": str(store), "spool": tmp_path / "state" / "update-spool",
            "seam": DpkgSeam("0.1.0")}


def _spool(env, version="0.2.0", package=PACKAGE, signed=None, tamper=None):
    manifest = json.dumps({"version": version, "url": f"https://u.example/{FILE}", "size": len(package),
                           "sha256": hashlib.sha256(package).hexdigest()}).encode()
    (env["spool"] / FILE).write_bytes(package)
    (env["spool"] / (FILE + ".manifest")).write_bytes(tamper(manifest) if tamper else manifest)
    (env["spool"] / (FILE + ".manifest.sig")).write_text(manifests.sign(manifest, signed or env["key"]))


def _install(env, version="0.2.0"):
    call = Call(Host(env["cfg"], env["seam"]))
    return call, update.install_op(call, {"version": version, "file_name": FILE}, store=env["store"])


def _refused(env, version="0.2.0"):
    with pytest.raises(AgentError) as info:
        _install(env, version)
    assert not os.path.exists(os.path.join(env["store"], FILE))
    assert [n for n in os.listdir(env["store"]) if n.startswith("incoming-")] == []
    return info.value.code


def test_verified_update_is_kept_and_the_helper_scheduled(env):
    _spool(env)
    call, reply = _install(env)
    kept = os.path.join(env["store"], FILE)
    previous = os.path.join(env["store"], "pulseup-agent_0.1.0_amd64.deb")
    assert reply == {"version": "0.2.0", "previous_version": "0.1.0", "revert_package": previous}
    assert open(kept, "rb").read() == PACKAGE and os.stat(env["store"]).st_mode & 0o777 == 0o700
    assert env["seam"].spawned == []          # only after the reply
    for func in call.after:
        func()
    argv = env["seam"].spawned[0]
    helper = argv[argv.index("-I") + 1]
    assert argv[argv.index("-I") - 1] == "/usr/bin/python3"
    assert helper.startswith(env["store"] + "/helper-") and os.path.exists(helper)
    assert argv[argv.index("--new") + 1] == kept and argv[argv.index("--old") + 1] == previous
    assert argv[argv.index("--deadline") + 1] == "120.0"


def test_tampered_package_manifest_or_signature_is_refused(env):
    _spool(env, package=PACKAGE)
    (env["spool"] / FILE).write_bytes(PACKAGE[:-1] + b"?")
    assert _refused(env) == "integrity_error"
    _spool(env, tamper=lambda body: body.replace(b"0.2.0", b"0.3.0"))
    assert _refused(env) == "integrity_error"
    _spool(env, signed=ed25519.Ed25519PrivateKey.generate())
    assert _refused(env) == "integrity_error"
    _spool(env)
    (env["spool"] / (FILE + ".manifest.sig")).write_text("")
    assert _refused(env) == "integrity_error"


def test_signed_manifest_for_another_version_is_refused(env):
    _spool(env, version="0.3.0")
    assert _refused(env, "0.2.0") == "integrity_error"


def test_no_downgrade_or_reinstall(env):
    _spool(env, version="0.1.0")
    assert _refused(env, "0.1.0") == "failed_precondition"
    env["seam"].installed = "0.3.0"
    _spool(env)
    assert _refused(env) == "failed_precondition"


def test_no_package_to_revert_to_means_no_update(env):
    os.unlink(os.path.join(env["store"], "pulseup-agent_0.1.0_amd64.deb"))
    _spool(env)
    with pytest.raises(AgentError) as info:
        update.previous_package(env["seam"], env["store"], "0.1.0", archives=env["store"])
    assert info.value.code == "failed_precondition" and "revert" in info.value.message


def test_symlink_in_the_spool_is_refused(env, tmp_path):
    _spool(env)
    os.unlink(env["spool"] / FILE)
    (tmp_path / "elsewhere.deb").write_bytes(PACKAGE)
    os.symlink(tmp_path / "elsewhere.deb", env["spool"] / FILE)
    assert _refused(env) == "failed_precondition"


def test_key_writable_by_others_is_refused(env, tmp_path):
    _spool(env)
    os.chmod(tmp_path / "update.pub", 0o666)
    assert _refused(env) == "failed_precondition"


# --- the helper, run as the detached copy is: /usr/bin/python3 -I <file> ----------

def _helper(tmp_path, status_writer=None, deadline=1.0):
    dpkg_log = tmp_path / "dpkg.log"
    fake_dpkg = tmp_path / "fake-dpkg"
    fake_dpkg.write_text(f"#!/bin/sh\necho \"$@\" >> {dpkg_log}\n")
    fake_dpkg.chmod(0o755)
    status = tmp_path / "worker-status.json"
    argv = ["/usr/bin/python3", "-I", update.__file__, "--new", "/x/new.deb", "--old", "/x/old.deb",
            "--version", "0.2.0", "--status", str(status), "--socket", str(tmp_path / "none.sock"),
            "--deadline", str(deadline), "--log", str(tmp_path / "update.log"), "--delay", "0",
            "--restart-timeout", "0.5", "--dpkg", str(fake_dpkg)]
    proc = subprocess.Popen(argv, env={"PATH": "/usr/bin:/bin"})
    if status_writer:
        threading.Thread(target=status_writer, args=(status,), daemon=True).start()
    code = proc.wait(timeout=120)
    return code, dpkg_log.read_text().splitlines()


def test_helper_keeps_an_update_whose_worker_connects(tmp_path):
    def connect(status):
        time.sleep(0.3)
        status.write_text(json.dumps({"connected": True, "version": "0.2.0", "at": time.time()}))
    code, dpkg = _helper(tmp_path, connect, deadline=30)
    assert code == 0 and dpkg == ["-i /x/new.deb"]


@pytest.mark.parametrize("stale", [None, {"connected": True, "version": "0.1.0"},
                                   {"connected": False, "version": "0.2.0"}])
def test_helper_reverts_when_the_new_worker_does_not_connect(tmp_path, stale):
    def report(status):
        if stale is not None:
            status.write_text(json.dumps({**stale, "at": time.time() + 1}))
    code, dpkg = _helper(tmp_path, report, deadline=1.0)
    assert code == 1 and dpkg == ["-i /x/new.deb", "-i /x/old.deb"]
    log = [json.loads(line) for line in (tmp_path / "update.log").read_text().splitlines()]
    assert any("reverting" in entry["msg"] for entry in log)


def test_record_worker_status_is_what_the_helper_reads(env, tmp_path):
    os.makedirs(os.path.dirname(env["cfg"].supervisor_socket))
    update.record_worker_status(env["seam"], env["cfg"], {"connected": True, "version": "0.2.0"})
    status = json.load(open(update.status_path(env["cfg"])))
    assert status["connected"] and status["version"] == "0.2.0" and status["at"] <= time.time()


def test_helper_needs_only_the_standard_library(tmp_path):
    # The copy runs with Debian's python3 while dpkg replaces the venv: no agent imports.
    done = subprocess.run(["/usr/bin/python3", "-I", update.__file__, "--help"], capture_output=True,
                          text=True, cwd=str(tmp_path), env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and "--deadline" in done.stdout, done.stderr
