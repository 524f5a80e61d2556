"""Helpers of the packaging tests: build, install, repack and inspect the .deb.

Everything runs the real tools (dpkg-deb, dpkg, lintian); the only fakes are
the versions of repacked packages, which stand in for later releases.
"""

import os
import re
import shutil
import subprocess
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_SCRIPT = os.path.join(REPO, "packaging", "build-deb.sh")
PACKAGE = "pulseup-agent"
APP = "/usr/lib/pulseup-agent"
LOCK_WAIT = 300.0


def in_ci():
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason):
    """Skip locally; fail in CI, where scripts/install-test-deps.sh ran (harness rule)."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: packaging tests must run)", pytrace=False)
    pytest.skip(reason)


def run(argv, env=None, check=True, timeout=300, **kwargs):
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, **kwargs)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {done.returncode}\n"
                             f"stdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}")
    return done


def dpkg(*args, env=None, check=True):
    """dpkg with retries while another process (apt-get in a parallel setup) holds its lock."""
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        done = run(["dpkg", *args], env=env, check=False)
        locked = "lock" in done.stderr and done.returncode != 0
        if not locked or time.monotonic() > deadline:
            break
        time.sleep(2)
    if check and done.returncode != 0:
        raise AssertionError(f"dpkg {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def installed_version():
    done = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev} ${Version}", PACKAGE], check=False)
    if done.returncode != 0 or not done.stdout.startswith("ii"):
        return None
    return done.stdout.split()[-1]


def build(out_dir, version=None):
    env = {"PULSEUP_VERSION": version} if version else {}
    done = run(["bash", BUILD_SCRIPT, str(out_dir)], env=env, timeout=600)
    path = done.stdout.strip().splitlines()[-1]
    assert os.path.isfile(path), done.stderr
    return path


def field(deb, name):
    return run(["dpkg-deb", "-f", deb, name]).stdout.strip()


def repack(deb, version, out_dir, mutate=None):
    """A copy of ``deb`` announcing ``version`` (control and agent.__version__).

    ``mutate(root)`` may change the unpacked tree first (a broken release).
    Cheap (seconds) next to a real build; returns the new path.
    """
    root = os.path.join(out_dir, f"repack-{version}")
    shutil.rmtree(root, ignore_errors=True)
    run(["dpkg-deb", "-R", deb, root])
    control = os.path.join(root, "DEBIAN", "control")
    with open(control) as handle:
        text = handle.read()
    with open(control, "w") as handle:
        handle.write(re.sub(r"(?m)^Version: .*$", f"Version: {version}", text))
    init = _agent_init(root)
    with open(init) as handle:
        text = handle.read()
    with open(init, "w") as handle:
        handle.write(re.sub(r'(?m)^__version__ = .*$', f'__version__ = "{version}"', text))
    if mutate is not None:
        mutate(root)
    arch = field(deb, "Architecture")
    path = os.path.join(out_dir, f"{PACKAGE}_{version}_{arch}.deb")
    run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", root, path])
    shutil.rmtree(root, ignore_errors=True)
    return path


def _agent_init(root):
    lib = os.path.join(root, APP.lstrip("/"), "lib")
    for python in os.listdir(lib):
        candidate = os.path.join(lib, python, "site-packages", "agent", "__init__.py")
        if os.path.exists(candidate):
            return candidate
    raise AssertionError("agent/__init__.py not found in the package")


def purge(all_data=True):
    env = {"PULSEUP_PURGE_DATA": "yes"} if all_data else {"PULSEUP_PURGE_DATA": ""}
    return dpkg("--purge", PACKAGE, env=env)
