"""Self-contained stand-ins of the official database images, built offline.

No registry is reachable (docs/hosts.md, "The test machines"), so `postgres:16`, `mariadb:11`, `mysql:8`
and `redis:7` are imitated from Debian's packages: one `debootstrap --variant=minbase` rootfs
with PostgreSQL 15, MariaDB 10.11 and Redis 7.0 (~90 s once, cached as a tarball under
/var/cache/pulseup-test keyed by its recipe), `docker import`ed per session, and one tiny
`docker build` per engine adding an entrypoint that honours the official images' variables
(POSTGRES_*, MARIADB_*/MYSQL_*), data paths and first-start behaviour (a temporary server
on the local socket only, then the real one on TCP). The cluster and data dirs the Debian
packages create at install time are removed: Docker would copy them into new volumes.

MongoDB is not obtainable at all: `mongo_standin_image` is a busybox image whose `mongosh`,
`mongodump` and `mongorestore` are small scripts that check their arguments and credentials
and stream a tar of /data/db/<db> as the "archive".

Run as a script to prebuild the cached tarball (CI does it once):
    python tests/integration/db/dbimages.py
"""
import fcntl
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile

PACKAGES = ("postgresql-15", "postgresql-client-15", "mariadb-server", "mariadb-client",
            "redis-server", "redis-tools")
MIRROR = os.environ.get("PULSEUP_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CACHE_DIR = os.environ.get("PULSEUP_TEST_CACHE", "/var/cache/pulseup-test")
# Install-time state that must not end up in the image (see the module docstring).
PRUNE = ("var/lib/postgresql/15/main", "etc/postgresql/15/main", "var/lib/mysql",
         "var/lib/redis", "var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc",
         "usr/share/man", "usr/share/info")

POSTGRES_TAG = "pulseup-test/postgres:16"
MARIADB_TAG = "pulseup-test/mariadb:11"
MYSQL_TAG = "pulseup-test/mysql:8"
REDIS_TAG = "pulseup-test/redis:7"
MONGO_TAG = "pulseup-test/mongo-standin:7"

_RECIPE = hashlib.sha256(repr((PACKAGES, PRUNE, "bookworm", 1)).encode()).hexdigest()[:12]
ROOT_TAG = f"pulseup-test/dbroot:{_RECIPE}"
TARBALL = os.path.join(CACHE_DIR, f"dbroot-{_RECIPE}.tar")
_HERE = os.path.dirname(os.path.abspath(__file__))


def rootfs_tarball():
    """Path of the cached rootfs tarball, building it (under a lock) when missing."""
    os.makedirs(CACHE_DIR, exist_ok=True)
    with open(TARBALL + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel sessions wait for one build
        if not os.path.exists(TARBALL):
            _build_tarball()
    return TARBALL


def _build_tarball():
    work = tempfile.mkdtemp(prefix="pulseup-dbroot-", dir="/var/tmp")
    root = os.path.join(work, "root")
    try:
        subprocess.run(["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
                        "bookworm", root, MIRROR], check=True, capture_output=True, timeout=1200)
        for rel in PRUNE:
            shutil.rmtree(os.path.join(root, rel), ignore_errors=True)
        partial = TARBALL + ".partial"
        subprocess.run(["tar", "--numeric-owner", "-C", root, "-cf", partial, "."],
                       check=True, capture_output=True, timeout=600)
        os.replace(partial, TARBALL)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"building the database rootfs failed: {exc.stderr[-4000:]!r}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _has_image(client, tag):
    import docker.errors

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def import_root(client):
    """`docker import` of the cached rootfs as ROOT_TAG (once per engine)."""
    if not _has_image(client, ROOT_TAG):
        repository, _, tag = ROOT_TAG.rpartition(":")
        with open(rootfs_tarball(), "rb") as tarball:
            client.api.import_image_from_data(tarball, repository=repository, tag=tag)
        client.images.get(ROOT_TAG)
    return ROOT_TAG


def _context(dockerfile, files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, content, mode in [("Dockerfile", dockerfile, 0o644)] + list(files):
            data = content.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def _script(name):
    with open(os.path.join(_HERE, "standin", name)) as f:
        return f.read()


def _build(client, tag, dockerfile, files):
    if not _has_image(client, tag):
        client.images.build(fileobj=_context(dockerfile, files), custom_context=True, tag=tag,
                            rm=True, pull=False)
    return tag


def _engine_image(client, tag, entrypoint, tail):
    base = import_root(client)
    dockerfile = (f"FROM {base}\nCOPY entrypoint.sh /usr/local/bin/docker-entrypoint.sh\n"
                  "ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:"
                  "/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8\n"
                  'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]\n' + tail)
    return _build(client, tag, dockerfile, [("entrypoint.sh", _script(entrypoint), 0o755)])


def postgres_image(client):
    # STOPSIGNAL SIGINT as the official image: fast shutdown (docs/hosts.md, "Database containers").
    return _engine_image(client, POSTGRES_TAG, "postgres-entrypoint.sh",
                         'STOPSIGNAL SIGINT\nEXPOSE 5432\nCMD ["postgres"]\n')


def mariadb_image(client, tag=MARIADB_TAG):
    return _engine_image(client, tag, "mariadb-entrypoint.sh",
                         'EXPOSE 3306\nCMD ["mariadbd"]\n')


def mysql_image(client):
    """MySQL goes through the MariaDB server with MYSQL_* variables and mysql* tools."""
    return mariadb_image(client, MYSQL_TAG)


def redis_image(client):
    return _engine_image(client, REDIS_TAG, "redis-entrypoint.sh",
                         'WORKDIR /data\nEXPOSE 6379\nCMD ["redis-server"]\n')


def mongo_standin_image(client, base_image):
    files = [(name, _script(f"mongo-{name}"), 0o755)
             for name in ("mongod", "mongosh", "mongodump", "mongorestore")]
    dockerfile = (f"FROM {base_image}\nCOPY mongod mongosh mongodump mongorestore /usr/local/bin/\n"
                  'EXPOSE 27017\nCMD ["mongod"]\n')
    return _build(client, MONGO_TAG, dockerfile, files)


if __name__ == "__main__":
    print(rootfs_tarball())
