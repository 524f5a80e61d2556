"""The built .deb itself: name, control data, contents, lintian, the units' directives."""

import configparser
import os
import re
import shutil
import stat
import subprocess

import pytest

from agent import __version__, config, exitcodes
from debtools import REPO, field, run, unavailable


def _contents(deb):
    """{path: (mode string, owner/group, link target or None)} from dpkg-deb -c."""
    entries = {}
    for line in run(["dpkg-deb", "-c", deb]).stdout.splitlines():
        parts = line.split(None, 5)
        path, _, target = parts[5].partition(" -> ")
        entries[path.lstrip(".").rstrip("/") or "/"] = (parts[0], parts[1], target or None)
    return entries


@pytest.fixture(scope="module")
def contents(deb_file):
    return _contents(deb_file)


@pytest.fixture(scope="module")
def unpacked(deb_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("unpacked")
    run(["dpkg-deb", "-R", deb_file, str(root)])
    return root


def _unit(unpacked, name):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(unpacked / "lib/systemd/system" / name)
    return parser


def test_name_and_control_fields(deb_file):
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    version = __version__.replace(".dev", "~dev")
    assert os.path.basename(deb_file) == f"pulseup-agent_{version}_{arch}.deb"
    assert field(deb_file, "Package") == "pulseup-agent"
    assert field(deb_file, "Version") == version
    assert "adduser" in field(deb_file, "Depends")


def test_venv_layout_and_entry_point(contents):
    assert contents["/usr/bin/pulseup-agent"][2] == "../lib/pulseup-agent/bin/pulseup-agent"
    assert "/usr/lib/pulseup-agent/bin/pulseup-agent" in contents
    assert any(p.startswith("/usr/lib/pulseup-agent/lib/python3.11/site-packages/gevent/") for p in contents)
    # made from Debian's interpreter, never a build under /root (docs/hosts.md, "The test machines")
    assert contents["/usr/lib/pulseup-agent/bin/python3"][2].endswith("bin/python3")
    assert not [p for p in contents if p.endswith(".pyc") or "__pycache__" in p]


def test_venv_points_at_the_installed_path(unpacked):
    cfg = (unpacked / "usr/lib/pulseup-agent/pyvenv.cfg").read_text()
    assert "home = /usr/bin" in cfg
    leftover = subprocess.run(["grep", "-rlI", "/tmp/", str(unpacked / "usr/lib/pulseup-agent/bin"),
                               str(unpacked / "usr/lib/pulseup-agent/pyvenv.cfg")],
                              capture_output=True, text=True).stdout
    assert leftover == ""
    wrapper = (unpacked / "usr/lib/pulseup-agent/bin/pulseup-agent").read_text()
    assert wrapper.startswith("#!/bin/sh") and "exec /usr/lib/pulseup-agent/bin/python3 -I -m agent" in wrapper


def test_config_is_a_private_conffile(contents, unpacked):
    assert contents["/etc/pulseup-agent/config"][0] == "-rw-r-----"
    conffiles = (unpacked / "DEBIAN/conffiles").read_text().split()
    assert sorted(conffiles) == ["/etc/logrotate.d/pulseup-agent", "/etc/pulseup-agent/config"]
    shipped = (unpacked / "etc/pulseup-agent/config").read_text()
    assert shipped == open(os.path.join(REPO, "conf/config.example")).read()


def test_maintainer_scripts_present_and_executable(unpacked):
    for name in ("postinst", "prerm", "postrm"):
        mode = os.stat(unpacked / "DEBIAN" / name).st_mode
        assert mode & stat.S_IXUSR, name
        assert (unpacked / "DEBIAN" / name).read_text().startswith("#!/bin/sh")


def test_lintian_reports_no_errors(deb_file):
    if shutil.which("lintian") is None:
        # Not part of scripts/install-test-deps.sh (another engineer's file): fetched here.
        done = subprocess.run(["apt-get", "install", "-y", "-q", "lintian"], capture_output=True, text=True,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if done.returncode != 0:
            unavailable(f"lintian is not installed and apt-get failed: {done.stderr[-500:]}")
    done = run(["lintian", "--tag-display-limit", "0", deb_file], check=False)
    errors = [line for line in done.stdout.splitlines() if line.startswith("E:")]
    assert errors == [], done.stdout


def test_supervisor_unit(unpacked):
    svc = _unit(unpacked, "pulseup-supervisor.service")["Service"]
    assert svc["Type"] == "notify"
    assert svc["User"] == "root"
    assert svc["ExecStart"] == "/usr/bin/pulseup-agent supervisor"
    assert svc["RuntimeDirectory"] == "pulseup"
    assert svc["KillMode"] == "mixed"
    # the supervisor keeps full access (docs/operations.md, "The units")
    for key in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp"):
        assert key not in svc


def test_worker_unit(unpacked):
    unit = _unit(unpacked, "pulseup-worker.service")
    svc = unit["Service"]
    assert svc["User"] == "pulseup-worker" and svc["Group"] == "pulseup"
    assert unit["Unit"]["Requires"] == "pulseup-supervisor.service"
    assert "pulseup-supervisor.service" in unit["Unit"]["After"].split()
    assert svc["Type"] == "notify" and svc["KillMode"] == "mixed"
    assert svc["ExecStart"] == "/usr/bin/pulseup-agent worker"
    assert float(svc["TimeoutStopSec"]) > config.BY_NAME["GRACEFUL_TIMEOUT"].default
    assert {int(code) for code in svc["RestartPreventExitStatus"].split()} == set(exitcodes.NO_RESTART)
    assert "SupplementaryGroups" not in svc     # group membership instead (docs/operations.md, "The units")
    assert (svc["NoNewPrivileges"], svc["ProtectSystem"], svc["ProtectHome"], svc["PrivateTmp"]) == \
        ("yes", "strict", "yes", "yes")
    writable = {path.lstrip("-") for path in svc["ReadWritePaths"].split()}
    cfg = config.defaults()
    for path in (cfg.state_dir, cfg.cert_dir, cfg.pulseup_backup_dir, cfg.apps_dir, cfg.deployment_log_dir,
                 *cfg.pulseup_backup_storage_roots):
        assert any(path == root or path.startswith(root + "/") for root in writable), path


def test_units_name_no_unknown_directive(unpacked, tmp_path):
    # systemd-analyze verify also wants ExecStart to exist: give it the unpacked tree's
    # binary path through a copy with the path rewritten.
    for name in ("pulseup-supervisor.service", "pulseup-worker.service"):
        text = (unpacked / "lib/systemd/system" / name).read_text()
        assert not re.search(r"@[A-Z_]+@", text), "unsubstituted template value"
        (tmp_path / name).write_text(text.replace("/usr/bin/pulseup-agent", "/bin/true")
                                     .replace("Requires=pulseup-supervisor.service", "")
                                     .replace("EnvironmentFile=-/etc/pulseup-agent/config", ""))
    done = run(["systemd-analyze", "verify", str(tmp_path / "pulseup-supervisor.service"),
                str(tmp_path / "pulseup-worker.service")], check=False)
    assert done.returncode == 0 and "Unknown" not in done.stderr, done.stderr


def test_logrotate_config_is_valid(unpacked):
    if shutil.which("logrotate") is None:
        unavailable("logrotate is not installed")
    done = run(["logrotate", "--debug", str(unpacked / "etc/logrotate.d/pulseup-agent")], check=False)
    assert done.returncode == 0 and "error" not in done.stderr.lower(), done.stderr
    assert "/var/log/pulseup/*.log" in (unpacked / "etc/logrotate.d/pulseup-agent").read_text()
