"""End to end self-update with real dpkg (docs/operations.md, "Self-update"; issue 12).

The package of this session is installed with ``dpkg -i``; its supervisor and
worker run the way their units say (unitrun.py), enrolled against an
in-process devserver that serves signed manifests (``/api/update/*``). The
releases are real builds: the session's package and a second build with the
next PULSEUP_VERSION; the broken release is a repack of the second whose
worker exits at once and whose default config changed (so the helper's dpkg
must keep the operator's edited config without prompting).

systemd is not PID 1 here (docs/hosts.md, "The test machines"), so servicemanager.ServiceManager plays
its part: it restarts a unit that exits (Restart=, RestartSec=,
RestartPreventExitStatus=) and carries out ``systemctl restart`` for the
supervisor, which runs in a private mount namespace where a shim named
``systemctl`` forwards the request to the test. Without /run/systemd/system
the postinst restarts nothing and the update helper asks the supervisor's
``service.restart`` op, as on any host without systemd; the supervisor
process itself keeps running (under systemd the postinst's try-restart would
restart it as well).
"""

import glob
import hashlib
import json
import os
import re
import shutil
import time

import gevent
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.devserver.server import DevServer
from agent.protocol.update import sign
from debtools import build, dpkg, field, installed_version, purge, repack, run
from servicemanager import SUPERVISOR, WORKER, ServiceManager

CONFIG = "/etc/pulseup-agent/config"
KEY_FILE = "/etc/pulseup-agent/update.pub"       # the default UPDATE_PUBLIC_KEY_FILE
CA_COPY = "/etc/pulseup-agent/test-devserver-ca.crt"
CERTS = "/var/lib/pulseup/certs"
STORE = "/var/lib/pulseup-agent/updates"
HELPER_LOG = os.path.join(STORE, "update.log")
MARKER = "/var/lib/pulseup-agent/.test-install"   # conftest.py: this installation is a test's
DEADLINE = 20           # UPDATE_HEALTH_DEADLINE here (default 120 s)
SETTLE = 240            # bound for install + restart + reconnect on a loaded 2-core host


# --- releases -------------------------------------------------------------------

@pytest.fixture(scope="module")
def releases(_host, deb_file, deb_dir):
    """{"base" | "new" | "broken": (version, path)}: two real builds and a broken repack."""
    base = field(deb_file, "Version")
    if not re.fullmatch(r"\d+\.\d+\.\d+", base):     # a .dev tree: updates need X.Y.Z
        base, deb_file = "1.0.0", build(deb_dir, "1.0.0")
    major, minor, patch = (int(part) for part in base.split("."))
    new, broken = f"{major}.{minor}.{patch + 1}", f"{major}.{minor}.{patch + 2}"
    new_deb = build(deb_dir, new)
    broken_deb = repack(new_deb, broken, str(deb_dir), mutate=_break_worker)
    return {"base": (base, deb_file), "new": (new, new_deb), "broken": (broken, broken_deb)}


def _break_worker(root):
    """A release that cannot connect: its worker exits at once. Its default config changed too."""
    wrapper = os.path.join(root, "usr/lib/pulseup-agent/bin/pulseup-agent")
    with open(wrapper) as handle:
        text = handle.read()
    exit_early = 'case "$1" in worker) echo "broken release: the worker exits" >&2; exit 1;; esac\n'
    with open(wrapper, "w") as handle:
        handle.write(re.sub(r"(?m)^exec ", lambda match: exit_early + match.group(0), text, count=1))
    with open(os.path.join(root, "etc/pulseup-agent/config"), "a") as handle:
        handle.write("# a packaged default that changed in this release\n")


def publish(devserver, key, deb, version, tamper=None, signature=None):
    """Serve a signed manifest for ``deb`` at the devserver's /api/update/manifest.

    ``tamper(manifest)`` edits it after signing; ``signature`` replaces the
    .sig text (False: no .sig at all).
    """
    root = os.path.join(devserver.data_dir, "update")
    os.makedirs(os.path.join(root, "files"), exist_ok=True)
    name = os.path.basename(deb)
    shutil.copy(deb, os.path.join(root, "files", name))
    manifest = {"version": version, "url": f"{devserver.url}/api/update/files/{name}",
                "size": os.path.getsize(deb), "sha256": _sha256(deb),
                "published_at": "2026-01-01T00:00:00Z", "changelog": f"release {version}"}
    body = json.dumps(manifest).encode()
    text = sign(body, key) if signature is None else signature
    if tamper is not None:
        tamper(manifest)
        body = json.dumps(manifest).encode()
    with open(os.path.join(root, "manifest.json"), "wb") as handle:
        handle.write(body)
    sig = os.path.join(root, "manifest.json.sig")
    if text is not False:
        with open(sig, "w") as handle:
            handle.write(text)
    elif os.path.exists(sig):
        os.unlink(sig)
    return manifest


def _sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


# --- the installed, enrolled, running agent ---------------------------------------------

class Agent:
    def __init__(self, devserver, manager, uid, key, releases):
        self.devserver, self.manager, self.uid = devserver, manager, uid
        self.key, self.releases = key, releases

    def call(self, event, data=None, timeout=120):
        return self.devserver.call(self.uid, event, data or {}, timeout=timeout)

    def wait_version(self, version, since=0.0, timeout=SETTLE):
        """True once the agent is connected announcing ``version`` (the devserver's agents
        list), authenticated after ``since``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(a["server_uid"] == self.uid and a["connected"] and a["version"] == version
                   and a["authenticated_at"] >= since for a in self.devserver.agents()):
                return True
            gevent.sleep(0.2)
        return False

    def settle(self, requests, version):
        """After the helper: its ``requests`` worker restarts carried out, then ``version``
        connected from the last worker started (a connection about to be replaced does not count)."""
        deadline = time.monotonic() + SETTLE
        while self.manager.served < requests and time.monotonic() < deadline:
            gevent.sleep(0.2)
        return self.wait_version(version, since=self.manager.last_start(WORKER))

    def logs(self):
        return "\n".join(f"--- {name}\n{self.manager.output(name)}" for name in (SUPERVISOR, WORKER)) \
            + f"\n--- helper\n{_read(HELPER_LOG)}\n--- restarts {self.manager.restarts}"


@pytest.fixture(scope="module")
def agent(releases, tmp_path_factory):
    work = tmp_path_factory.mktemp("update-e2e")
    base_version, base_deb = releases["base"]
    if installed_version() != base_version:
        # --force-confnew: a config left by install.sh's uninstall is not the package's
        dpkg("--force-confnew", "-i", base_deb)
    open(MARKER, "w").close()
    key = ed25519.Ed25519PrivateKey.generate()
    devserver = DevServer(str(work / "devserver"), listen="127.0.0.1:0").start()
    manager = None
    try:
        _configure(devserver, key, base_deb, str(work))
        manager = ServiceManager(str(work))
        manager.start(SUPERVISOR)
        assert manager.wait_ready(SUPERVISOR), manager.output(SUPERVISOR)
        manager.start(WORKER)
        assert manager.wait_ready(WORKER), manager.output(WORKER)
        uid = devserver.wait_connected(timeout=60)
        assert uid is not None, manager.output(WORKER)
        yield Agent(devserver, manager, uid, key, releases)
    finally:
        if manager is not None:
            manager.stop()
        _wait_helpers_gone()
        devserver.stop()
        for path in (KEY_FILE, CA_COPY):
            if os.path.exists(path):
                os.unlink(path)
        purge(all_data=True)       # leave the host clean: users, dirs, the update store


def _configure(devserver, key, base_deb, work):
    """The operator's steps (docs/operations.md): key, config, a package to revert to, enroll."""
    shutil.copy(devserver.ca_file, CA_COPY)
    os.chmod(CA_COPY, 0o644)
    with open(KEY_FILE, "wb") as handle:       # root-owned, readable by the worker
        handle.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    os.chmod(KEY_FILE, 0o644)
    settings = {"WEBSOCKET_URL": devserver.ws_url, "ENROLL_CA_FILE": CA_COPY, "RECONNECT_INTERVAL": "0.2",
                "UPDATE_MANIFEST_URL": devserver.url + "/api/update/manifest",
                "UPDATE_HEALTH_DEADLINE": str(DEADLINE)}
    kept = [line for line in _read(CONFIG).splitlines() if line.split("=", 1)[0] not in settings]
    with open(CONFIG, "w") as handle:
        handle.write("\n".join(kept + [f"{name}={value}" for name, value in settings.items()]) + "\n")
    os.makedirs(STORE, 0o700, exist_ok=True)
    shutil.copy(base_deb, STORE)
    shutil.rmtree(CERTS, ignore_errors=True)
    os.makedirs(CERTS, 0o700)
    shutil.chown(CERTS, "pulseup-worker", "pulseup")
    token_file = os.path.join(work, "join-token")
    with open(os.open(token_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
        handle.write(devserver.create_token() + "\n")
    run(["/usr/bin/pulseup-agent", "enroll", "--join-token-file", token_file])


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


def _helper_pids():
    """Update helpers started by this installation's supervisor (their copies live in STORE)."""
    pids = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(cmdline, "rb") as handle:
                if (STORE + "/helper-").encode() in handle.read():
                    pids.append(int(cmdline.split("/")[2]))
        except OSError:
            pass
    return pids


def _helper_outcome(offset, timeout=SETTLE):
    """The helper's last record once it logged how the update ended and exited; None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = _helper_records(offset)
        if records and records[-1]["msg"] in ("update healthy", "reverted", "revert failed"):
            return records[-1] if _wait_helpers_gone(deadline - time.monotonic()) else None
        time.sleep(0.5)
    return None


def _wait_helpers_gone(timeout=SETTLE):
    deadline = time.monotonic() + timeout
    while _helper_pids() and time.monotonic() < deadline:
        time.sleep(0.5)
    return not _helper_pids()


def _helper_records(offset):
    return [json.loads(line) for line in _read(HELPER_LOG)[offset:].splitlines() if line.strip()]


def _packages():
    return sorted(os.path.basename(path) for path in glob.glob(os.path.join(STORE, "*.deb")))


# --- the tests -------------------------------------------------------------------------

def _tampered(agent):
    """An attacker swaps the package of a signed manifest for another one."""
    broken_deb = agent.releases["broken"][1]
    publish(agent.devserver, agent.key, broken_deb, agent.releases["broken"][0])   # serve its file

    def swap(manifest):
        manifest.update(url=manifest["url"].rsplit("/", 1)[0] + "/" + os.path.basename(broken_deb),
                        size=os.path.getsize(broken_deb), sha256=_sha256(broken_deb))
    return {"tamper": swap}


REFUSALS = {
    "tampered": (_tampered, "integrity_error"),
    "signed by another key": (lambda agent: {"key": ed25519.Ed25519PrivateKey.generate()}, "integrity_error"),
    "empty signature": (lambda agent: {"signature": ""}, "integrity_error"),
    # No .sig at all is a 404 from the release host, answered unavailable (docs/operations.md, "Tests").
    "no signature file": (lambda agent: {"signature": False}, "unavailable"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_tampered_or_unsigned_manifest_is_refused(agent, case):
    before, packages = installed_version(), _packages()
    make, code = REFUSALS[case]
    version, deb = agent.releases["new"]
    options = make(agent)
    publish(agent.devserver, options.pop("key", agent.key), deb, version, **options)
    for command in ("agent.update.check", "agent.update.apply"):
        reply = agent.call(command)
        assert reply["success"] is False and reply["code"] == code, (command, reply)
    assert installed_version() == before and _packages() == packages
    assert agent.call("agent.ping")["data"]["version"] == before
    assert not _helper_pids()
    spool = glob.glob("/var/lib/pulseup/state/update-spool/*.deb*")
    assert spool == [], spool


def test_signed_update_installs_and_the_agent_comes_back_on_it(agent):
    version, deb = agent.releases["new"]
    before, offset = installed_version(), len(_read(HELPER_LOG))
    assert before != version
    publish(agent.devserver, agent.key, deb, version)
    check = agent.call("agent.update.check")["data"]
    assert check["update_available"] is True and check["latest_version"] == version, check
    assert check["current_version"] == before and check["checksum"] == _sha256(deb)
    requests = agent.manager.served
    reply = agent.call("agent.update.apply")
    assert reply["success"] is True, reply
    assert reply["data"]["version"] == version
    outcome = _helper_outcome(offset)
    assert outcome is not None and outcome["msg"] == "update healthy", agent.logs()
    # one `systemctl restart pulseup-worker` from the supervisor, asked by the helper
    assert agent.settle(requests + 1, version), agent.logs()
    assert agent.call("agent.ping")["data"]["version"] == version
    assert run(["dpkg-query", "-W", "pulseup-agent"]).stdout.split() == ["pulseup-agent", version]
    assert os.path.basename(deb) in _packages()       # kept for a later revert
    # The new worker reports the new version, and the manifest offers nothing newer.
    assert agent.call("agent.update.apply")["data"] == {"message": "No updates available"}


def test_update_whose_worker_cannot_connect_is_reverted(agent):
    version, deb = agent.releases["broken"]
    before, offset = installed_version(), len(_read(HELPER_LOG))
    publish(agent.devserver, agent.key, deb, version)
    requests = agent.manager.served
    reply = agent.call("agent.update.apply")
    assert reply["success"] is True and reply["data"]["version"] == version, reply
    # The helper installs, waits UPDATE_HEALTH_DEADLINE for a connected new worker, reinstalls.
    outcome = _helper_outcome(offset)
    assert outcome is not None and outcome["msg"] == "reverted", agent.logs()
    assert agent.settle(requests + 2, before), agent.logs()     # a worker restart per install
    assert installed_version() == before
    assert agent.call("agent.ping")["data"]["version"] == before
    records = _helper_records(offset)
    installs = [r for r in records if r["msg"] == "dpkg -i"]
    assert [(os.path.basename(r["package"]), r["exit_code"]) for r in installs] == \
        [(os.path.basename(deb), 0), (f"pulseup-agent_{before}_{field(deb, 'Architecture')}.deb", 0)], \
        agent.logs()
    revert = next(r for r in records if r["msg"].startswith("new worker did not connect"))
    assert revert["time"] - installs[0]["time"] >= DEADLINE
    # The broken worker really ran and failed (it was restarted by the unit policy meanwhile).
    assert "broken release: the worker exits" in agent.manager.output(WORKER, tail=10**7)
    # The operator's config survived both installs although the packaged default changed.
    assert f"UPDATE_HEALTH_DEADLINE={DEADLINE}" in _read(CONFIG)
