"""Every executable the suite runs on the host is installed by scripts/install-test-deps.sh.

A brand-new Debian machine that ran only that script must pass `CI=true ./test.sh` (issue 18:
logrotate was missing and one packaging test failed on such a machine). Three checks:

- TOOLS declares each host executable the suite (or code it tests) runs, with the Debian
  package that ships it and the package of the script's list that brings it in;
- a scan of tests/, agent/, scripts/ and bench/ (argv literals handed to a process runner,
  `shutil.which("x")`, the harness's service requirements) finds no executable missing from
  TOOLS, so a new tool cannot slip in without being declared;
- on this host, `dpkg -S` confirms that each declared path belongs to the declared package,
  and that package is the listed one or a direct dependency of it.

How a fresh machine was checked is in docs/support.md ("A brand-new machine").
"""
import ast
import fnmatch
import functools
import glob
import os
import re
import shutil
import subprocess

import pytest

from tests.ci import unavailable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "install-test-deps.sh")

# executable -> (path or glob on Debian, owning package (fnmatch pattern), package of the script's list)
TOOLS = {
    "docker": ("/usr/bin/docker", "docker.io", "docker.io"),
    "dockerd": ("/usr/sbin/dockerd", "docker.io", "docker.io"),
    "docker-proxy": ("/usr/sbin/docker-proxy", "docker.io", "docker.io"),
    "containerd": ("/usr/bin/containerd", "containerd", "containerd"),
    "docker-compose": ("/usr/bin/docker-compose", "docker-compose", "docker-compose"),
    "busybox": ("/bin/busybox", "busybox-static", "busybox-static"),
    "caddy": ("/usr/bin/caddy", "caddy", "caddy"),
    "git": ("/usr/bin/git", "git", "git"),
    "git-http-backend": ("/usr/lib/git-core/git-http-backend", "git", "git"),
    "psql": ("/usr/bin/psql", "postgresql-client-common", "postgresql-client-common"),
    "initdb": ("/usr/lib/postgresql/*/bin/initdb", "postgresql-[0-9]*", "postgresql"),
    "pg_ctl": ("/usr/lib/postgresql/*/bin/pg_ctl", "postgresql-[0-9]*", "postgresql"),
    "mariadbd": ("/usr/sbin/mariadbd", "mariadb-server-core", "mariadb-server-core"),
    "mariadb-install-db": ("/usr/bin/mariadb-install-db", "mariadb-server-core", "mariadb-server-core"),
    "mariadb": ("/usr/bin/mariadb", "mariadb-client-core", "mariadb-client-core"),
    "mariadb-admin": ("/usr/bin/mariadb-admin", "mariadb-client", "mariadb-client"),
    "redis-server": ("/usr/bin/redis-server", "redis-server", "redis-server"),
    "redis-cli": ("/usr/bin/redis-cli", "redis-tools", "redis-tools"),
    "zstd": ("/usr/bin/zstd", "zstd", "zstd"),
    "gzip": ("/bin/gzip", "gzip", "gzip"),
    "debootstrap": ("/usr/sbin/debootstrap", "debootstrap", "debootstrap"),
    "ip": ("/bin/ip", "iproute2", "iproute2"),
    "ldd": ("/usr/bin/ldd", "libc-bin", "libc-bin"),
    "mount": ("/bin/mount", "mount", "mount"),
    "umount": ("/bin/umount", "mount", "mount"),
    "tar": ("/bin/tar", "tar", "tar"),
    "lintian": ("/usr/bin/lintian", "lintian", "lintian"),
    "dpkg": ("/usr/bin/dpkg", "dpkg", "dpkg"),
    "dpkg-deb": ("/usr/bin/dpkg-deb", "dpkg", "dpkg"),
    "dpkg-query": ("/usr/bin/dpkg-query", "dpkg", "dpkg"),
    "apt-get": ("/usr/bin/apt-get", "apt", "apt"),
    "logrotate": ("/usr/sbin/logrotate", "logrotate", "logrotate"),
    "systemd-analyze": ("/usr/bin/systemd-analyze", "systemd", "systemd"),
    "useradd": ("/usr/sbin/useradd", "passwd", "passwd"),
    "userdel": ("/usr/sbin/userdel", "passwd", "passwd"),
    "runuser": ("/sbin/runuser", "util-linux", "util-linux"),
    "ssh-keygen": ("/usr/bin/ssh-keygen", "openssh-client", "openssh-client"),
    "ps": ("/bin/ps", "procps", "procps"),
    "curl": ("/usr/bin/curl", "curl", "curl"),
    "sh": ("/bin/dash", "dash", "dash"),
    "bash": ("/bin/bash", "bash", "bash"),
    "grep": ("/bin/grep", "grep", "grep"),
    "sed": ("/bin/sed", "sed", "sed"),
    "wc": ("/usr/bin/wc", "coreutils", "coreutils"),
    "env": ("/usr/bin/env", "coreutils", "coreutils"),
    "python3": ("/usr/bin/python3", "python3-minimal", "python3"),
    "chromium": ("/usr/bin/chromium", "chromium", "chromium"),
    "chromedriver": ("/usr/bin/chromedriver", "chromium-driver", "chromium-driver"),
}

# Names the scan finds that are no host executable: git subcommands, commands run inside
# test containers (their image carries them), the project's own programs, tools that
# cannot be installed here and have a named stand-in (docs/support.md), deliberate misses.
NOT_HOST_TOOLS = {
    "checkout", "clean", "fetch", "init", "log", "ls-remote", "remote", "reset", "rev-parse",
    "id", "stat", "touch", "echo", "cat", "true", "false", "sleep",
    "/usr/bin/pulseup-agent", "/usr/lib/pulseup-agent/uninstall",
    "nixpacks", "/nonexistent/tool",
    "chromium-browser",     # other distributions' name, tried after Debian's `chromium`
}
SCANNED = ("tests", "agent", "scripts", "bench")
RUNNERS = {"run", "stream", "Popen", "check_output", "check_call", "call", "run_tool", "spawn", "execvp", "execv"}


def script_packages():
    text = open(SCRIPT, encoding="utf-8").read()
    match = re.search(r'^PACKAGES="([^"]*)"', text, re.M)
    assert match, "PACKAGES=\"...\" not found in scripts/install-test-deps.sh"
    return set(match.group(1).replace("\\\n", " ").split())


def _argv_head(node):
    """The executable of a runner call whose first argument is an argv literal, else None."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if name == "which" and node.args and isinstance(node.args[0], ast.Constant):
        return node.args[0].value
    if name in RUNNERS and node.args and isinstance(node.args[0], (ast.List, ast.Tuple)) and node.args[0].elts:
        first = node.args[0].elts[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    return None


def scanned_executables():
    """{executable: first file naming it} over the Python sources of SCANNED."""
    found = {}
    for top in SCANNED:
        for folder, _, files in os.walk(os.path.join(REPO, top)):
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                tree = ast.parse(open(path, encoding="utf-8").read(), path)
                for node in ast.walk(tree):
                    head = _argv_head(node) if isinstance(node, ast.Call) else None
                    if head:
                        found.setdefault(head, os.path.relpath(path, REPO))
    from tests.integration.harness.require import _NEEDS
    for needs in _NEEDS.values():
        for binary in needs.get("bins", []):
            found.setdefault(binary, "tests/integration/harness/require.py")
    return found


def test_every_declared_tool_comes_from_the_script():
    missing = {tool: via for tool, (_, _, via) in TOOLS.items() if via not in script_packages()}
    assert missing == {}, f"add these packages to scripts/install-test-deps.sh: {missing}"


def test_every_executable_the_suite_runs_is_declared():
    known = set(TOOLS) | {path for path, _, _ in TOOLS.values()} | NOT_HOST_TOOLS
    undeclared = {name: where for name, where in scanned_executables().items()
                  if name not in known and os.path.basename(name) not in TOOLS}
    assert undeclared == {}, f"declare these in tests/test_toolchain.py TOOLS: {undeclared}"


def test_the_scan_sees_known_calls():
    """The scanner itself works: it finds tools called in well-known places."""
    found = scanned_executables()
    for name in ("logrotate", "docker-compose", "lintian", "dockerd", "psql", "debootstrap"):
        assert name in found, name


def _spellings(path):
    """``path`` as dpkg may have recorded it: itself, its target, the merged-/usr aliases."""
    candidates = [path, os.path.realpath(path)]
    for alias, real in (("/bin/", "/usr/bin/"), ("/sbin/", "/usr/sbin/")):
        candidates += [c.replace(real, alias, 1) for c in candidates if c.startswith(real)]
        candidates += [c.replace(alias, real, 1) for c in candidates if c.startswith(alias)]
    return list(dict.fromkeys(candidates))


@functools.lru_cache(maxsize=1)
def _dpkg_owners():
    """{path: package} for every spelling of every declared tool, from one `dpkg -S` run."""
    paths = [p for pattern, _, _ in TOOLS.values() for found in glob.glob(pattern) for p in _spellings(found)]
    done = subprocess.run(["dpkg", "-S", *dict.fromkeys(paths)], capture_output=True, text=True, timeout=120)
    owners = {}
    for line in done.stdout.splitlines():   # "pkg[:arch][, pkg2]: /path"; diversions are skipped
        package, _, owned = line.partition(": ")
        if not package.startswith("diversion"):
            owners[owned.strip()] = package.split(",")[0].split(":")[0].strip()
    return owners


def _owner(path):
    """The package owning ``path`` per `dpkg -S` (merged-/usr spellings and symlinks tried)."""
    owners = _dpkg_owners()
    return next((owners[c] for c in _spellings(path) if c in owners), None)


def _depends(package):
    done = subprocess.run(["dpkg-query", "-W", "-f=${Pre-Depends},${Depends}", package], capture_output=True, text=True, timeout=60)
    return {re.split(r"[\s(:]", alt.strip())[0] for part in done.stdout.split(",") for alt in part.split("|")
            if alt.strip()}


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_tool_is_installed_and_owned_by_its_package(tool):
    pattern, owner, via = TOOLS[tool]
    if shutil.which("dpkg") is None:
        unavailable("not a Debian host: dpkg is missing")
    paths = sorted(glob.glob(pattern))
    if not paths:
        unavailable(f"{tool} ({pattern}) is not installed: run scripts/install-test-deps.sh as root")
    package = _owner(paths[-1])
    assert package is not None and fnmatch.fnmatch(package, owner), f"{paths[-1]} belongs to {package}, not {owner}"
    assert package == via or package in _depends(via), f"{package} is not {via} nor one of its dependencies"
