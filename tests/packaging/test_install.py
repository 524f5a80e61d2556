"""dpkg -i, upgrade and purge on this host: users, directories, modes, units, entry point."""

import grp
import os
import pwd
import stat
import subprocess

import pytest

from debtools import dpkg, installed_version, purge, repack, run

# The layout of issue 12 and docs/operations.md ("Install"), written out independently of host-setup.sh.
LAYOUT = {
    "/etc/pulseup-agent/config": ("root", "pulseup", 0o640),
    "/var/lib/pulseup": ("root", "pulseup", 0o750),
    "/var/lib/pulseup/certs": ("pulseup-worker", "pulseup", 0o700),
    "/var/lib/pulseup/state": ("pulseup-worker", "pulseup", 0o700),
    "/var/lib/pulseup/backups": ("pulseup-worker", "pulseup", 0o750),
    "/var/lib/pulseup-agent": ("root", "root", 0o700),
    "/var/log/pulseup": ("root", "pulseup", 0o750),
    "/var/log/pulseup/deployments": ("pulseup-worker", "pulseup", 0o750),
    "/opt/pulseup": ("pulseup-worker", "pulseup", 0o750),
}
DATA = ("/var/lib/pulseup", "/var/log/pulseup", "/opt/pulseup")


def _owner(path):
    info = os.stat(path)
    return pwd.getpwuid(info.st_uid).pw_name, grp.getgrgid(info.st_gid).gr_name, stat.S_IMODE(info.st_mode)


def _as_worker(argv):
    user = pwd.getpwnam("pulseup-worker")
    return subprocess.run(argv, capture_output=True, text=True, user=user.pw_uid, group=user.pw_gid,
                          extra_groups=os.getgrouplist("pulseup-worker", user.pw_gid), cwd="/opt/pulseup",
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, timeout=60)


def test_install_creates_users_dirs_and_modes(installed):
    worker = pwd.getpwnam("pulseup-worker")
    assert grp.getgrgid(worker.pw_gid).gr_name == "pulseup"
    assert worker.pw_shell == "/usr/sbin/nologin"
    assert worker.pw_uid < 1000   # a system user
    try:
        docker = grp.getgrnam("docker")
    except KeyError:
        docker = None
    if docker is not None:
        assert "pulseup-worker" in docker.gr_mem
    for path, expected in LAYOUT.items():
        assert _owner(path) == expected, path


def test_entry_point_runs_for_root_and_the_worker(installed):
    expected = f"pulseup-agent {installed_version()}"
    assert run(["/usr/bin/pulseup-agent", "--version"]).stdout.strip() == expected
    assert run(["/usr/bin/pulseup-agent", "version"]).stdout.strip() == expected
    as_worker = _as_worker(["/usr/bin/pulseup-agent", "--version"])
    assert as_worker.stdout.strip() == expected, as_worker.stderr
    # the worker can read its settings (root:pulseup 0640)
    as_worker = _as_worker(["/usr/bin/pulseup-agent", "check-config"])
    assert as_worker.returncode == 0 and "/etc/pulseup-agent/config" not in as_worker.stderr, as_worker.stderr


def test_installed_units_verify_and_are_enabled(installed):
    units = ["/lib/systemd/system/pulseup-supervisor.service", "/lib/systemd/system/pulseup-worker.service"]
    done = run(["systemd-analyze", "verify", *units], check=False)
    assert done.returncode == 0 and "Unknown" not in done.stderr, done.stderr
    for unit in ("pulseup-supervisor.service", "pulseup-worker.service"):
        assert os.path.islink(f"/etc/systemd/system/multi-user.target.wants/{unit}")


def test_upgrade_keeps_config_certificates_and_state(installed, deb_dir):
    with open("/etc/pulseup-agent/config", "a") as handle:
        handle.write("WEBSOCKET_URL=wss://control.example/ws/agent_v2\n")
    for path in ("/var/lib/pulseup/certs/agent.crt", "/var/lib/pulseup/state/outbox.log"):
        with open(path, "w") as handle:
            handle.write("kept\n")
    newer = repack(installed, "99.0.0", str(deb_dir))
    dpkg("-i", newer)
    assert installed_version() == "99.0.0"
    assert run(["/usr/bin/pulseup-agent", "--version"]).stdout.strip() == "pulseup-agent 99.0.0"
    assert "WEBSOCKET_URL=wss://control.example/ws/agent_v2" in open("/etc/pulseup-agent/config").read()
    for path in ("/var/lib/pulseup/certs/agent.crt", "/var/lib/pulseup/state/outbox.log"):
        assert open(path).read() == "kept\n"
    for path, expected in LAYOUT.items():
        assert _owner(path) == expected, path


def test_remove_then_purge_keeps_data_unless_asked(installed):
    """One test for the whole cycle: each dpkg -i costs seconds."""
    assert os.path.isdir("/usr/lib/pulseup-agent/lib/python3.11/site-packages/agent/__pycache__")
    dpkg("--remove", "pulseup-agent")
    assert not os.path.exists("/usr/lib/pulseup-agent")   # bytecode went with the prerm
    assert os.path.exists("/etc/pulseup-agent/config")     # remove keeps conffiles
    purge(all_data=False)
    assert installed_version() is None
    for path in ("/usr/bin/pulseup-agent", "/etc/pulseup-agent", "/var/lib/pulseup-agent",
                 "/lib/systemd/system/pulseup-worker.service",
                 "/etc/systemd/system/multi-user.target.wants/pulseup-worker.service"):
        assert not os.path.lexists(path), path
    for path in DATA:
        assert os.path.isdir(path), path
    pwd.getpwnam("pulseup-worker")

    dpkg("-i", installed)
    purge(all_data=True)          # PULSEUP_PURGE_DATA=yes
    for path in (*DATA, "/usr/lib/pulseup-agent", "/etc/pulseup-agent"):
        assert not os.path.lexists(path), path
    with pytest.raises(KeyError):
        pwd.getpwnam("pulseup-worker")
    with pytest.raises(KeyError):
        grp.getgrnam("pulseup")
