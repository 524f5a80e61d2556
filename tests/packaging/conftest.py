"""Fixtures of the packaging tests: one .deb per session, installs that always purge.

These tests change the host (users, /var/lib/pulseup, /usr/lib/pulseup-agent):
they need root on Debian and refuse to touch a host where pulseup-agent is
already installed for real. ``PULSEUP_TEST_DEB=/path.deb`` reuses a built
package instead of building one (about 30 s).
"""

import os
import shutil

import pytest

from debtools import build, dpkg, field, installed_version, purge, unavailable


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.path).startswith(here + os.sep):
            item.add_marker(pytest.mark.integration)


def _require_host():
    if os.geteuid() != 0:
        unavailable("packaging tests need root (dpkg -i, useradd)")
    if not os.path.exists("/etc/debian_version"):
        unavailable("packaging tests need a Debian host")
    for tool in ("dpkg-deb", "systemd-analyze", "/usr/bin/python3"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed")


@pytest.fixture(scope="session")
def deb_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("debs")


@pytest.fixture(scope="session")
def deb_file(deb_dir):
    """Path of pulseup-agent_<version>_<arch>.deb built from this tree, once per session."""
    _require_host()
    prebuilt = os.environ.get("PULSEUP_TEST_DEB")
    if prebuilt:
        return prebuilt
    return build(deb_dir)


MARKER = "/var/lib/pulseup-agent/.test-install"


@pytest.fixture(scope="session")
def _host(deb_file):
    """Guard against touching a real installation; purge everything at the end of the session."""
    if installed_version() is not None and not os.path.exists(MARKER):
        unavailable("pulseup-agent is installed on this host; not touching a real installation")
    yield
    if dpkg("-s", "pulseup-agent", check=False).returncode == 0:
        purge(all_data=True)


@pytest.fixture
def installed(_host, deb_file):
    """The package of this session installed with dpkg -i (once; again after a test removed
    or upgraded it). dpkg -i takes 5-15 s here, so tests share one installation."""
    if installed_version() != field(deb_file, "Version"):
        dpkg("-i", deb_file)
    # Marks the installation as ours so that an interrupted run can be cleaned up.
    open(MARKER, "w").close()
    return deb_file
