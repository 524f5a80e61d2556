"""packaging/install.sh (hosts without the .deb) and the packaged uninstall it ships."""

import os

import pytest

from debtools import REPO, dpkg, installed_version, run
from test_install import LAYOUT, _owner

UNITS = ("/etc/systemd/system/pulseup-supervisor.service", "/etc/systemd/system/pulseup-worker.service")


@pytest.fixture
def script_install(_host):
    if installed_version() is not None:
        dpkg("--purge", "pulseup-agent", env={"PULSEUP_PURGE_DATA": "yes"})
    try:
        yield
    finally:
        if os.path.exists("/usr/lib/pulseup-agent/uninstall"):
            run(["/usr/lib/pulseup-agent/uninstall"], env={"PULSEUP_UNINSTALL_DETACHED": "1"}, check=False)
        for path in UNITS:
            if os.path.exists(path):
                os.unlink(path)


def test_install_sh_then_packaged_uninstall(script_install):
    done = run(["sh", os.path.join(REPO, "packaging", "install.sh")], timeout=600)
    assert "pulseup-agent enroll --join-token-file" in done.stdout
    for path, expected in LAYOUT.items():
        assert _owner(path) == expected, path
    assert run(["/usr/bin/pulseup-agent", "--version"]).stdout.startswith("pulseup-agent ")
    verify = run(["systemd-analyze", "verify", *UNITS], check=False)
    assert verify.returncode == 0 and "Unknown" not in verify.stderr, verify.stderr
    # agent.uninstall's flag and script (docs/operations.md, "Upgrade, remove, purge"): the agent goes, data and
    # config stay.
    os.makedirs("/var/run/pulseup-agent", exist_ok=True)
    open("/var/run/pulseup-agent/delete-needed", "w").close()
    run(["/usr/lib/pulseup-agent/uninstall"], env={"PULSEUP_UNINSTALL_DETACHED": "1"})
    for path in ("/usr/lib/pulseup-agent", "/usr/bin/pulseup-agent", *UNITS,
                 "/var/run/pulseup-agent/delete-needed"):
        assert not os.path.lexists(path), path
    assert os.path.exists("/etc/pulseup-agent/config") and os.path.isdir("/var/lib/pulseup/state")
