"""Fixtures of the backup-operations integration tests: a real devserver with an enrolled
identity (as tests/worker/conftest.py does), and the database engineer's Redis stand-in
image for scheduled backups through the real pipeline."""
import os
import sys

import pytest

_DB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "db")
if _DB not in sys.path:
    sys.path.insert(0, _DB)

from harness import require_service  # noqa: E402

from agent import config  # noqa: E402
from agent.services.system import SystemService  # noqa: E402
from agent.worker.identity import enroll  # noqa: E402


@pytest.fixture
def enrolled(tmp_path, devserver):
    """(cfg, identity): a config pointing at the devserver and an identity in its CERT_DIR."""
    cfg = config.defaults().replace(
        websocket_url=devserver.ws_url, enroll_ca_file=devserver.ca_file,
        state_dir=str(tmp_path / "state"), cert_dir=str(tmp_path / "certs"),
        pulseup_backup_dir=str(tmp_path / "backups"), agent_log_dir=str(tmp_path / "logs"))
    identity = enroll(cfg, devserver.create_token(), SystemService(cfg).hardware_info())
    return cfg, identity


@pytest.fixture(scope="session")
def redis_image(docker_client):
    import dbimages
    require_service("docker", "the Redis stand-in image")
    if not os.path.exists(dbimages.TARBALL) and not any(
            os.access(os.path.join(d, "debootstrap"), os.X_OK) for d in ("/usr/sbin", "/usr/bin")):
        pytest.skip("no cached database rootfs and debootstrap is missing")
    return dbimages.redis_image(docker_client)
