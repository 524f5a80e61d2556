"""Fixtures of the database integration tests: stand-in images, a config, a call context.

The images are built once per session on the harness's private dockerd (the rootfs
tarball behind them is cached across sessions, see dbimages.py).
"""
import os
import sys
import uuid

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import dbimages  # noqa: E402
from harness import require_service  # noqa: E402

from agent import config  # noqa: E402
from agent.services.context import CallContext  # noqa: E402
from agent.services import Services  # noqa: E402


@pytest.fixture(scope="session")
def db_images(docker_client, base_image):
    """{engine: image tag} of the stand-ins; MySQL runs on the MariaDB server."""
    require_service("docker", "database stand-in images")
    if not os.path.exists(dbimages.TARBALL) and not _debootstrap_possible():
        pytest.skip("no cached database rootfs and debootstrap is missing")
    return {
        "postgresql": dbimages.postgres_image(docker_client),
        "mariadb": dbimages.mariadb_image(docker_client),
        "mysql": dbimages.mysql_image(docker_client),
        "redis": dbimages.redis_image(docker_client),
        "mongodb": dbimages.mongo_standin_image(docker_client, base_image),
    }


def _debootstrap_possible():
    return any(os.access(os.path.join(d, "debootstrap"), os.X_OK) for d in ("/usr/sbin", "/usr/bin"))


@pytest.fixture
def backup_dir(tmp_path):
    path = tmp_path / "backups"
    path.mkdir()
    return str(path)


@pytest.fixture
def db_cfg(docker_host, db_images, test_network, backup_dir, tmp_path):
    return config.defaults().replace(
        docker_host=docker_host, state_dir=str(tmp_path / "state"), pulseup_backup_dir=backup_dir,
        db_image_postgresql=db_images["postgresql"], db_image_mariadb=db_images["mariadb"],
        db_image_mysql=db_images["mysql"], db_image_redis=db_images["redis"],
        db_image_mongodb=db_images["mongodb"], db_image_pull="never")


class Recorder:
    """A CallContext factory that records every emitted event."""

    def __init__(self, services):
        self.services = services
        self.events = []

    def ctx(self, command="test"):
        return CallContext(self.services, command,
                           emit=lambda event, data: self.events.append((event, data)))

    def of(self, event):
        return [data for name, data in self.events if name == event]


@pytest.fixture
def services(db_cfg):
    svc = Services(db_cfg)
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def recorder(services):
    return Recorder(services)


@pytest.fixture
def uid_factory(docker_client):
    """Fresh service uids; their containers and volumes are removed after the test."""
    made = []

    def make(prefix="db"):
        uid = f"{prefix}-{uuid.uuid4().hex[:8]}"
        made.append(uid)
        return uid

    yield make
    for uid in made:
        for container in docker_client.containers.list(all=True, filters={"name": f"pulseup-db-{uid}"}):
            if container.name == f"pulseup-db-{uid}":
                container.remove(force=True, v=True)
        for volume in docker_client.volumes.list(filters={"name": f"pulseup-db-vol-{uid}"}):
            if volume.name == f"pulseup-db-vol-{uid}":
                volume.remove(force=True)
