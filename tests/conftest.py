"""Root test configuration: gevent patches first, as in the real processes."""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402

os.environ["PULSEUP_STRICT_EVENTS"] = "1"   # an outbound event off its schema raises (agent/protocol/events.py)

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

from tests.ci import pytest_runtest_makereport  # noqa: E402,F401  (CI=true: a skip fails)

# The `ci` profile (docs/design.md, "Test sizes"); a full run lives in bench/.
settings.register_profile("ci", max_examples=500, deadline=None)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")


@pytest.fixture
def devserver(tmp_path):
    """A real development control plane (TLS, enrollment, WebSocket hub) on a free loopback
    port for one test; directories that need another scope or settings define their own."""
    from agent.devserver.server import DevServer

    server = DevServer(str(tmp_path / "dev"), listen="127.0.0.1:0", auth_timeout=5)
    server.start()
    yield server
    server.stop()
