"""The readiness gate against a fake container whose address is a real local server."""
import gevent
import gevent.server
import pytest

from agent.errors import AgentError
from agent.services.context import CallContext
from agent.services.deploy.gate import ReadinessGate


class FakeContainer:
    """Attributes as Docker inspects them; ``script`` changes them on each reload."""

    def __init__(self, address="127.0.0.1", healthcheck=None, script=None):
        self.name = "pulseup-app-svc-v0001-candidate"
        self.attrs = {"State": {"Status": "running", "ExitCode": 0}, "RestartCount": 0,
                      "Config": {"Healthcheck": {"Test": healthcheck} if healthcheck else None},
                      "NetworkSettings": {"Networks": {"pulseup-net": {"IPAddress": address}}}}
        self.script = list(script or [])
        self.reloads = 0

    def reload(self):
        self.reloads += 1
        if self.script:
            self.script.pop(0)(self.attrs)

    def logs(self, tail):
        return b"app log line\n"


def _http_server(status):
    def app(environ, start_response):
        start_response(status, [("Content-Type", "text/plain")])
        return [b"ok"]
    from gevent.pywsgi import WSGIServer
    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    return server


def _gate(container, port=None, path=None, timeout=5.0, said=None):
    gate = ReadinessGate(container, port, path, timeout, lambda text, level="INFO": None if said is None else said.append(level))
    gate.probe_interval = 0.05
    gate.stable_seconds = 0.3
    return gate


def test_tcp_and_http_probes_pass():
    server = _http_server("200 OK")
    try:
        _gate(FakeContainer(), server.server_port).wait()
        _gate(FakeContainer(), server.server_port, "/health").wait()
    finally:
        server.stop()


def test_http_error_status_fails_after_the_timeout():
    server = _http_server("500 Internal Server Error")
    try:
        with pytest.raises(AgentError) as info:
            _gate(FakeContainer(), server.server_port, "/health", timeout=0.3).wait()
    finally:
        server.stop()
    assert info.value.code == "health_check_failed" and "answered 500" in info.value.message


def test_closed_port_fails_after_the_timeout():
    server = gevent.server.StreamServer(("127.0.0.1", 0), lambda sock, addr: None)
    server.start()
    port = server.server_port
    server.stop()
    with pytest.raises(AgentError) as info:
        _gate(FakeContainer(), port, timeout=0.3).wait()
    assert info.value.code == "health_check_failed"


def _exit(attrs):
    attrs["State"].update(Status="exited", ExitCode=3)


def test_exited_container_fails_at_once_and_logs_are_kept():
    said = []
    container = FakeContainer(script=[lambda a: None, _exit])
    with pytest.raises(AgentError) as info:
        _gate(container, 1, timeout=60, said=said).wait()
    assert "exit code 3" in info.value.message and container.reloads <= 4
    assert "WARN" in said      # the last log lines went to the deploy log


def test_restart_fails_the_gate():
    container = FakeContainer(script=[lambda a: None, lambda a: a.update(RestartCount=1)])
    with pytest.raises(AgentError) as info:
        _gate(container, timeout=60).wait()
    assert "restarted" in info.value.message


def test_docker_health_decides_when_declared():
    healthy = FakeContainer(healthcheck=["CMD", "true"], script=[
        lambda a: a["State"].update(Health={"Status": "starting"}),
        lambda a: a["State"].update(Health={"Status": "healthy"})])
    _gate(healthy, port=1).wait()         # port 1 is never probed: the health check decides
    sick = FakeContainer(healthcheck=["CMD", "false"], script=[
        lambda a: a["State"].update(Health={"Status": "unhealthy"})])
    with pytest.raises(AgentError) as info:
        _gate(sick, timeout=60).wait()
    assert "unhealthy" in info.value.message


def test_without_port_the_container_must_stay_running():
    container = FakeContainer()
    gate = _gate(container)
    started = gevent.get_hub().loop.now()
    gate.wait()
    assert gevent.get_hub().loop.now() - started >= 0.25


def test_deadline_of_the_call_stops_the_gate():
    ctx = CallContext(None, "service.app.deploy", deadline=0.0)
    with pytest.raises(AgentError) as info:
        _gate(FakeContainer(), timeout=60).wait(ctx)
    assert info.value.code == "deadline_exceeded"
