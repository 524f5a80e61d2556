"""Container images for the demo, made from this host's files: no registry is needed.

``docker import`` of small root file systems written as in-memory tar archives:
busybox-static for a shell and an HTTP server, Debian's ``caddy`` with the libraries ``ldd``
names, and PostgreSQL from the host's ``/usr/lib/postgresql/<major>`` with an entrypoint that
honours the official image's ``POSTGRES_*`` variables and data path. The test images
(tests/integration/harness/images.py) are built with the pieces of this module.
"""

import glob
import io
import os
import re
import subprocess
import tarfile

BUSYBOX = "/bin/busybox"
CADDY = "/usr/bin/caddy"
SETPRIV = "/usr/bin/setpriv"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
APPBASE_TAG = "pulseup-demo/appbase:latest"
CADDY_TAG = "pulseup-demo/caddy:latest"
POSTGRES_TAG = "pulseup-demo/postgres:latest"
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USERS = (("root", 0, "/root", "/bin/sh"), ("postgres", 999, "/var/lib/postgresql", "/bin/sh"),
         ("nobody", 65534, "/nonexistent", "/bin/false"))

# First start: initdb with POSTGRES_USER/POSTGRES_PASSWORD, create POSTGRES_DB with a server
# bound to no TCP address, stop it; then the real server listens on every address with
# password authentication for remote clients (as the official postgres image behaves).
POSTGRES_ENTRYPOINT = """#!/bin/sh
set -eu
: "${PGDATA:=/var/lib/postgresql/data}" "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
export PGDATA
[ "${1:-}" = postgres ] || exec "$@"
pg() { /usr/local/bin/setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }
mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    secret=$(mktemp)
    printf '%s\\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" >"$secret"
    chown postgres "$secret"
    pg initdb -D "$PGDATA" --username="$POSTGRES_USER" --pwfile="$secret" >/dev/null
    rm -f "$secret"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    pg pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    if [ "$POSTGRES_DB" != postgres ]; then
        pg psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -q -c "CREATE DATABASE \\"$POSTGRES_DB\\""
    fi
    pg pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec /usr/local/bin/setpriv --reuid=postgres --regid=postgres --init-groups -- \\
    postgres -D "$PGDATA" -c listen_addresses='*'
"""


class RootfsTar:
    """A root file system as an uncompressed tar in memory, every entry owned by root."""

    def __init__(self):
        self._buf = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buf, mode="w")
        self._names = set()

    def _add(self, info, data=None):
        name = info.name.strip("/")
        if name in self._names:
            return
        parent = os.path.dirname(name)
        if parent and parent not in self._names:
            self.dir(parent)
        info.name, info.uid, info.gid, info.uname, info.gname = name, 0, 0, "root", "root"
        self._names.add(name)
        self._tar.addfile(info, io.BytesIO(data) if data is not None else None)

    def dir(self, path, mode=0o755):
        info = tarfile.TarInfo(path)
        info.type, info.mode = tarfile.DIRTYPE, mode
        self._add(info)

    def text(self, path, content, mode=0o644):
        self.data(path, content.encode(), mode)

    def data(self, path, content, mode=0o644):
        info = tarfile.TarInfo(path)
        info.size, info.mode = len(content), mode
        self._add(info, content)

    def host_file(self, host_path, path=None):
        """The content (symlinks followed) and mode of a host file at ``path`` (default: same)."""
        with open(host_path, "rb") as handle:
            self.data(path or host_path, handle.read(), os.stat(host_path).st_mode & 0o7777)

    def symlink(self, path, target):
        info = tarfile.TarInfo(path)
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
        self._add(info)

    def host_tree(self, top, skip=()):
        """A host directory with its files, keeping symlinks as symlinks."""
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
            self.dir(dirpath, os.stat(dirpath).st_mode & 0o7777)
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                if os.path.islink(path):
                    self.symlink(path, os.readlink(path))
                elif name in filenames and os.path.isfile(path):
                    self.host_file(path)

    def getvalue(self):
        self._tar.close()
        return self._buf.getvalue()


def busybox_rootfs(users=USERS):
    """busybox-static with one symlink per applet, /etc/passwd and /etc/group of ``users``
    ((name, uid = gid, home, shell) rows)."""
    root = RootfsTar()
    for path, mode in (("tmp", 0o1777), ("root", 0o700), ("etc", 0o755), ("var/tmp", 0o1777),
                       ("proc", 0o755), ("sys", 0o755), ("dev", 0o755)):
        root.dir(path, mode)
    root.text("etc/passwd", "".join(f"{n}:x:{i}:{i}:{n}:{h}:{s}\n" for n, i, h, s in users))
    root.text("etc/group", "".join(f"{n}:x:{i}:\n" for n, i, _, _ in users))
    root.host_file(BUSYBOX, "bin/busybox")
    listing = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, check=True,
                             timeout=30, env={"PATH": PATH_ENV}).stdout
    for applet in (line.strip() for line in listing.splitlines()):
        if applet and applet != "bin/busybox":
            root.symlink(applet, "/bin/busybox")
    return root


def shared_libraries(*binaries):
    """Absolute paths of the libraries and loader that ``ldd`` resolves for ``binaries``."""
    found = []
    for binary in binaries:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30,
                             env={"PATH": PATH_ENV}).stdout
        for match in re.finditer(r"(?:=>\s*)?(/\S+)\s+\(0x", out):
            if match.group(1) not in found:
                found.append(match.group(1))
    return found


def import_image(client, rootfs, tag, changes=()):
    """``docker import`` of ``rootfs`` as ``tag``; returns the tag."""
    repository, _, version = tag.rpartition(":")
    client.api.import_image_from_data(rootfs.getvalue(), repository=repository, tag=version,
                                      changes=list(changes))
    client.images.get(tag)   # raises ImageNotFound when the import failed quietly
    return tag


def appbase_image(client):
    """busybox plus /www; ``CMD httpd -f -p 8080 -h /www`` (sample apps copy their pages there)."""
    root = busybox_rootfs()
    root.dir("www")
    return import_image(client, root, APPBASE_TAG, [f"ENV PATH={PATH_ENV}", "WORKDIR /www",
                                                   'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]'])


def caddy_rootfs(users=USERS):
    """busybox plus Debian's caddy, which is dynamically linked: the libraries ``ldd`` names,
    the CA bundle and caddy's directories (/data, /config, /srv, /etc/caddy)."""
    root = busybox_rootfs(users)
    root.host_file(CADDY, "usr/bin/caddy")
    for lib in shared_libraries(CADDY):
        root.host_file(lib)
    root.host_file(CA_BUNDLE)
    for path in ("data", "config", "srv", "etc/caddy"):
        root.dir(path)
    return root


def caddy_image(client):
    """caddy running its boot document /etc/caddy/caddy.json (agent/services/caddy/container.py)."""
    return import_image(client, caddy_rootfs(), CADDY_TAG, [
        f"ENV PATH={PATH_ENV}", "ENV XDG_CONFIG_HOME=/config", "ENV XDG_DATA_HOME=/data",
        "WORKDIR /srv", 'ENTRYPOINT ["/usr/bin/caddy"]', 'CMD ["run", "--config", "/etc/caddy/caddy.json"]'])


def postgres_home():
    """The newest /usr/lib/postgresql/<major> with a server binary, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(os.path.dirname(found[-1])) if found else None


def postgres_image(client):
    """PostgreSQL from the host's packages; None when the host has no PostgreSQL server."""
    home = postgres_home()
    if home is None:
        return None
    major = os.path.basename(home)
    root = busybox_rootfs()
    root.host_tree(home, skip=(f"{home}/lib/bitcode",))     # bitcode only serves the JIT
    for tree in (f"/usr/share/postgresql/{major}", "/usr/share/zoneinfo", "/usr/lib/locale/C.utf8"):
        if os.path.isdir(tree):
            root.host_tree(tree)
    elves = glob.glob(f"{home}/bin/*") + glob.glob(f"{home}/lib/*.so") + [SETPRIV]
    # called by its path: busybox's sh prefers its own applet, which lacks --reuid
    root.host_file(SETPRIV, "usr/local/bin/setpriv")
    for lib in shared_libraries(*elves):
        root.host_file(lib)
    root.dir("var/lib/postgresql", 0o755)
    root.data("usr/local/bin/docker-entrypoint.sh", POSTGRES_ENTRYPOINT.encode(), 0o755)
    return import_image(client, root, POSTGRES_TAG, [
        f"ENV PATH={home}/bin:{PATH_ENV}", "ENV LANG=C.UTF-8", "ENV PGDATA=/var/lib/postgresql/data",
        "EXPOSE 5432", 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]',
        'CMD ["postgres"]'])
