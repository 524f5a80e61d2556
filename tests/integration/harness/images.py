"""Test images without a registry: `docker import` of small rootfs tarballs built in memory.

No registry is reachable here (docs/hosts.md, "The test machines"), so every image the suite needs is made
from host files: busybox-static for a shell and httpd, Debian's caddy with its libraries.
The tarballs are written with tarfile directly, so no rootfs dir, chroot or root-owned
leftovers exist on disk. The rootfs builder is the demo's (agent/devserver/demo_images.py);
this module keeps the test images' tags, users and configuration.
"""
from agent.devserver.demo_images import busybox_rootfs as _busybox_rootfs
from agent.devserver.demo_images import caddy_rootfs as _caddy_rootfs
from agent.devserver.demo_images import import_image

BASE_TAG = "pulseup-test/busybox:latest"
APP_BASE_TAG = "pulseup-test/appbase:latest"
CADDY_TAG = "pulseup-test/caddy:latest"

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USERS = (("root", 0, "/root", "/bin/sh"), ("nobody", 65534, "/nonexistent", "/bin/false"))
DEFAULT_CADDYFILE = ":80 {\n\trespond \"pulseup-test caddy\"\n}\n"


def busybox_rootfs():
    """busybox-static with one symlink per applet, like `busybox --install -s`."""
    return _busybox_rootfs(USERS)


def appbase_rootfs():
    """The base plus /www, where app images put their pages for `httpd -h /www`."""
    root = busybox_rootfs()
    root.dir("www")
    return root


def caddy_rootfs():
    """Debian's caddy is dynamically linked (docs/hosts.md, "Caddy"): ship what ldd names."""
    root = _caddy_rootfs(USERS)
    root.text("etc/caddy/Caddyfile", DEFAULT_CADDYFILE)
    return root


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
