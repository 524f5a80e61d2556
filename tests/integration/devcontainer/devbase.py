"""A stand-in for `debian:bookworm-slim`, the base of the development Dockerfile.

No registry is reachable here (docs/hosts.md, "The test machines"; docs/operations.md, "Development containers"): the base
is a `debootstrap --variant=minbase` bookworm rootfs, cached as a tarball
under /var/cache/pulseup-test keyed by its recipe (as tests/integration/db/
dbimages.py does), and `docker import`ed under the name the Dockerfile's FROM
line asks for. It already holds the packages the Dockerfile installs, so the
build's `apt-get install` only resolves them (after a real `apt-get update`)
instead of downloading docker.io on every run.

Run as a script to prebuild the cached tarball (a few minutes once):
    python tests/integration/devcontainer/devbase.py
"""
import fcntl
import glob
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile

# The packages of the Dockerfile's apt-get line.
PACKAGES = ("python3", "python3-venv", "ca-certificates", "git", "docker.io")
MIRROR = os.environ.get("PULSEUP_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CACHE_DIR = os.environ.get("PULSEUP_TEST_CACHE", "/var/cache/pulseup-test")
# What debian:bookworm-slim does not carry either.
PRUNE = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
         "usr/share/info")
BASE_TAG = "debian:bookworm-slim"
LOCAL_CAS = "/usr/local/share/ca-certificates"

_RECIPE = hashlib.sha256(repr((PACKAGES, PRUNE, "bookworm", 1)).encode()).hexdigest()[:12]
TARBALL = os.path.join(CACHE_DIR, f"devbase-{_RECIPE}.tar")


def debootstrap_possible():
    return any(os.access(os.path.join(d, "debootstrap"), os.X_OK) for d in ("/usr/sbin", "/usr/bin"))


def rootfs_tarball():
    """Path of the cached rootfs tarball, building it (under a lock) when missing."""
    os.makedirs(CACHE_DIR, exist_ok=True)
    with open(TARBALL + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel sessions wait for one build
        if not os.path.exists(TARBALL):
            _build_tarball()
    return TARBALL


def _build_tarball():
    work = tempfile.mkdtemp(prefix="pulseup-devbase-", dir="/var/tmp")
    root = os.path.join(work, "root")
    try:
        subprocess.run(["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
                        "bookworm", root, MIRROR], check=True, capture_output=True, timeout=1800)
        for rel in PRUNE:
            shutil.rmtree(os.path.join(root, rel), ignore_errors=True)
        os.makedirs(os.path.join(root, "var/lib/apt/lists/partial"))
        partial = TARBALL + ".partial"
        subprocess.run(["tar", "--numeric-owner", "-C", root, "-cf", partial, "."],
                       check=True, capture_output=True, timeout=600)
        os.replace(partial, TARBALL)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"building the dev base rootfs failed: {exc.stderr[-4000:]!r}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)


def import_base(client):
    """debian:bookworm-slim on ``client``'s engine: the cached rootfs plus this host's extra CAs."""
    import docker.errors

    try:
        return client.images.get(BASE_TAG).tags[0]
    except docker.errors.ImageNotFound:
        pass
    root_tag = f"pulseup-test/devroot:{_RECIPE}"
    repository, _, tag = root_tag.rpartition(":")
    with open(rootfs_tarball(), "rb") as tarball:
        client.api.import_image_from_data(
            tarball, repository=repository, tag=tag,
            changes=["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                     'CMD ["bash"]'])
    client.images.build(fileobj=_trust_context(root_tag), custom_context=True, tag=BASE_TAG,
                        pull=False, rm=True, forcerm=True)
    return BASE_TAG


def _trust_context(root_tag):
    """Build context adding the host's local CAs (``update-ca-certificates``) to the base.

    Hosts whose egress goes through a TLS-inspecting proxy (this one) trust its CA through
    /usr/local/share/ca-certificates; a site's own base image would carry it the same way.
    pip in a venv uses its bundled certifi unless told otherwise: /etc/pip.conf points it
    at the system bundle, as this host's pip configuration does.
    """
    cas = sorted(glob.glob(os.path.join(LOCAL_CAS, "*.crt")))
    lines = [f"FROM {root_tag}"]
    if cas:
        lines += ["COPY cas/ /usr/local/share/ca-certificates/", "RUN update-ca-certificates",
                  "RUN printf '[global]\\ncert = /etc/ssl/certs/ca-certificates.crt\\n' >/etc/pip.conf"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        files = [("Dockerfile", "\n".join(lines).encode() + b"\n")]
        files += [(f"cas/{os.path.basename(path)}", open(path, "rb").read()) for path in cas]
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


if __name__ == "__main__":
    print(rootfs_tarball())
