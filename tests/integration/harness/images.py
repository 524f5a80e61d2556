"""Test images without a registry: `docker import` of small rootfs tarballs built in memory.

No registry is reachable here (shared/ENVIRONMENT.md), so every image the suite needs is made
from host files: busybox-static for a shell and httpd, Debian's caddy with its libraries.
The tarballs are written with tarfile directly, so no rootfs dir, chroot or root-owned
leftovers exist on disk.
"""
import io
import os
import re
import subprocess
import tarfile

BUSYBOX = "/bin/busybox"
CADDY = "/usr/bin/caddy"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

BASE_TAG = "pulseup-test/busybox:latest"
APP_BASE_TAG = "pulseup-test/appbase:latest"
CADDY_TAG = "pulseup-test/caddy:latest"

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnobody:x:65534:\n"
DEFAULT_CADDYFILE = ":80 {\n\trespond \"pulseup-test caddy\"\n}\n"


class RootfsTar:
    """Accumulates a rootfs as an uncompressed tar in memory (all entries owned by root)."""

    def __init__(self):
        self._buf = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buf, mode="w")
        self._names = set()

    def _add(self, info, data=None):
        name = info.name.strip("/")
        if name in self._names:
            return
        self._add_parents(name)
        info.name = name
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        self._names.add(name)
        self._tar.addfile(info, io.BytesIO(data) if data is not None else None)

    def _add_parents(self, name):
        parent = os.path.dirname(name)
        if parent and parent not in self._names:
            self.dir(parent)

    def dir(self, path, mode=0o755):
        info = tarfile.TarInfo(path)
        info.type = tarfile.DIRTYPE
        info.mode = mode
        self._add(info)

    def text(self, path, content, mode=0o644):
        self.data(path, content.encode(), mode)

    def data(self, path, content, mode=0o644):
        info = tarfile.TarInfo(path)
        info.size = len(content)
        info.mode = mode
        self._add(info, content)

    def host_file(self, host_path, path=None):
        """Copy a host file's content (symlinks followed) and mode to path (default: same)."""
        with open(host_path, "rb") as f:
            content = f.read()
        self.data(path or host_path, content, os.stat(host_path).st_mode & 0o7777)

    def symlink(self, path, target):
        info = tarfile.TarInfo(path)
        info.type = tarfile.SYMTYPE
        info.linkname = target
        info.mode = 0o777
        self._add(info)

    def getvalue(self):
        self._tar.close()
        return self._buf.getvalue()


def busybox_rootfs():
    """busybox-static with one symlink per applet, like `busybox --install -s`."""
    root = RootfsTar()
    for path, mode in (("tmp", 0o1777), ("root", 0o700), ("etc", 0o755), ("var/tmp", 0o1777),
                       ("proc", 0o755), ("sys", 0o755), ("dev", 0o755)):
        root.dir(path, mode)
    root.text("etc/passwd", PASSWD)
    root.text("etc/group", GROUP)
    root.host_file(BUSYBOX, "bin/busybox")
    for applet in _busybox_applets():
        if applet != "bin/busybox":
            root.symlink(applet, "/bin/busybox")
    return root


def _busybox_applets():
    out = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def appbase_rootfs():
    """The base plus /www, where app images put their pages for `httpd -h /www`."""
    root = busybox_rootfs()
    root.dir("www")
    return root


def caddy_rootfs():
    """Debian's caddy is dynamically linked (ENVIRONMENT.md, "Caddy"): ship what ldd names."""
    root = busybox_rootfs()
    root.host_file(CADDY, "usr/bin/caddy")
    for lib in shared_libraries(CADDY):
        root.host_file(lib)
    root.host_file(CA_BUNDLE, CA_BUNDLE)
    root.text("etc/caddy/Caddyfile", DEFAULT_CADDYFILE)
    for path in ("data", "config", "srv"):
        root.dir(path)
    return root


def shared_libraries(binary):
    """Absolute paths of the libraries and loader `ldd binary` resolves (vdso excluded)."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True,
                         timeout=30).stdout
    paths = []
    for line in out.splitlines():
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            paths.append(match.group(1))
    return paths


def import_image(client, rootfs, tag, changes=()):
    """`docker import` of a RootfsTar as `tag`; returns the tag."""
    repository, _, version = tag.rpartition(":")
    client.api.import_image_from_data(rootfs.getvalue(), repository=repository, tag=version,
                                      changes=list(changes))
    client.images.get(tag)  # raises ImageNotFound if the import silently failed
    return tag


def build_base_image(client):
    return import_image(client, busybox_rootfs(), BASE_TAG,
                        [f"ENV {PATH_ENV}", 'CMD ["sh"]'])


def build_app_base_image(client):
    return import_image(client, appbase_rootfs(), APP_BASE_TAG,
                        [f"ENV {PATH_ENV}", "WORKDIR /www",
                         'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]'])


def build_caddy_image(client):
    """ENTRYPOINT is caddy itself: `command=["version"]` runs `caddy version`."""
    return import_image(client, caddy_rootfs(), CADDY_TAG, [
        f"ENV {PATH_ENV}", "ENV XDG_CONFIG_HOME=/config", "ENV XDG_DATA_HOME=/data",
        "ENV HOME=/root", "WORKDIR /srv", "EXPOSE 80 443 2019",
        'ENTRYPOINT ["/usr/bin/caddy"]',
        'CMD ["run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]'])
