"""Skip (locally) or fail (in CI) when a real service cannot be started here.

A developer without root or on another distribution gets skips; CI (CI=true) has run
scripts/install-test-deps.sh, so a missing piece there is a broken setup and must fail loudly.
"""
import glob
import os
import pwd
import shutil

import pytest

from .process import search_path

# What each service needs on the host besides root on Debian: executables and system users.
_NEEDS = {
    "docker": {"bins": ["dockerd", "containerd", "docker-proxy"]},
    "busybox": {"bins": ["/bin/busybox"]},
    "caddy": {"bins": ["caddy"]},
    "git": {"bins": ["git", "/usr/lib/git-core/git-http-backend"]},
    "postgres": {"bins": ["psql"], "globs": ["/usr/lib/postgresql/*/bin/initdb"],
                 "users": ["postgres"]},
    "mariadb": {"bins": ["mariadbd", "mariadb-install-db", "mariadb"], "users": ["mysql"]},
    "redis": {"bins": ["redis-server", "redis-cli"]},
}


def in_ci():
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason):
    """pytest.skip(reason), or pytest.fail(reason) when CI=true."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: integration services must be available)", pytrace=False)
    pytest.skip(reason)


def missing_requirements(name):
    """Why service `name` cannot start on this host, or None when it can."""
    if os.geteuid() != 0:
        return "not running as root"
    if not os.path.exists("/etc/debian_version"):
        return "not a Debian host"
    needs = _NEEDS.get(name, {})
    for binary in needs.get("bins", []):
        if shutil.which(binary, path=search_path()) is None:
            return f"{binary} not installed"
    for pattern in needs.get("globs", []):
        if not glob.glob(pattern):
            return f"nothing matches {pattern}"
    for user in needs.get("users", []):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"system user {user} missing"
    return None


def require_service(name, reason):
    """Skip or fail (see unavailable) unless service `name` can be started on this host.

    `reason` says what needed it; the message adds what is missing and how to fix it.
    """
    missing = missing_requirements(name)
    if missing:
        unavailable(f"{name}: {reason}: {missing} (run scripts/install-test-deps.sh as root)")
