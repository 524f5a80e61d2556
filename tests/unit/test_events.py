"""The outbound event catalogue (agent/protocol/events.py) and its use by the dispatcher."""

import pathlib
import re

import pytest

from agent.protocol import envelope, events
from agent.protocol.events import CATALOGUE, EventSchemaError
from tests.unit.fakes import Harness

AGENT = pathlib.Path(__file__).resolve().parents[2] / "agent"
# emit("name", ...), event_frame("name", ...), and the (name, data) tuples of queued and
# recovery events: return "name", {...} / ("name", {...})
EMITTED = re.compile(r'(?:(?:emit|event_frame|prepare)\(\s*"([a-z]+(?:_[a-z]+)+)",'
                     r'|\(\s*"([a-z]+(?:_[a-z]+)+)",\s*\{|return\s+"([a-z]+(?:_[a-z]+)+)",)')
# the events the spec reserves and the agent never sends (docs/protocol.md, "Outbound events")
RESERVED = {"service_status_update", "pending_installations"}


def emitted_names():
    names = {}
    for path in AGENT.rglob("*.py"):
        if "devserver" in path.parts:      # the dev control plane receives these events
            continue
        for match in EMITTED.finditer(path.read_text()):
            names.setdefault(match.group(1) or match.group(2) or match.group(3), str(path.relative_to(AGENT.parent)))
    return names


def test_every_event_the_agent_emits_is_in_the_catalogue():
    names = emitted_names()
    assert len(names) >= 12, names          # the scan found the emit sites at all
    assert {n: p for n, p in names.items() if n not in CATALOGUE} == {}


def test_every_catalogued_event_is_emitted_somewhere():
    assert set(CATALOGUE) - set(emitted_names()) == set()
    assert RESERVED.isdisjoint(CATALOGUE)


def test_durable_events_are_the_documented_ones():
    durable = {name for name, spec in CATALOGUE.items() if spec.durable}
    assert durable == {
        "update_service_status", "update_deployment_status", "rollback_status_update",
        "backup_status_update", "backup_download_status", "domain_status_update",
        "container_stopped", "monitoring_alert", "update_docker_config", "update_nixpacks_config",
        "deployment_log_chunk"}


def test_conforming_event_passes_and_strict_mode_is_on_in_tests():
    assert events.strict()
    events.check("deployment_heartbeat", {"deployment_uid": "d1", "timestamp": 1700000000})


@pytest.mark.parametrize("event,data,needle", [
    ("no_such_event", {}, "not in the event catalogue"),
    ("deployment_heartbeat", {"deployment_uid": "d1"}, "timestamp"),
    ("deployment_heartbeat", {"deployment_uid": "d1", "timestamp": "now"}, "timestamp"),
    ("deployment_heartbeat", {"deployment_uid": "d1", "timestamp": True}, "timestamp"),
    ("update_docker_config", {"service_uid": "s", "dockerfiles": ["Dockerfile"]}, "dockerfile"),
    ("update_service_status", {"service_uid": "s", "status": "exploded", "timestamp": "t"}, "status"),
    ("backup_status_update", ["not", "an", "object"], "must be an object"),
])
def test_strict_mode_raises_on_a_violation(event, data, needle):
    with pytest.raises(EventSchemaError, match=needle):
        events.check(event, data)


def test_production_logs_a_violation_once_and_still_sends(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(events.STRICT_ENV, "0")
    monkeypatch.setattr(events, "_reported", set())
    h = Harness(tmp_path)
    bad = {"service_uid": "s", "status": "exploded", "timestamp": "t"}
    with caplog.at_level("ERROR"):
        h.dispatcher.emit("update_service_status", bad)
        h.dispatcher.emit("update_service_status", bad)
    assert [r for r in caplog.records if "update_service_status" in r.getMessage()].__len__() == 1
    queued = []
    while (head := h.outbox.peek()) is not None:
        queued.append(envelope.decode(head[1]).raw)
        h.outbox.ack(head[0])
    assert [f["data"] for f in queued] == [bad, bad]


def test_strict_mode_refuses_to_send(tmp_path):
    h = Harness(tmp_path)
    with pytest.raises(EventSchemaError):
        h.dispatcher.emit("update_service_status", {"service_uid": "s"})
    assert h.outbox.peek() is None and h.direct == []


def test_durability_comes_from_the_catalogue(tmp_path):
    h = Harness(tmp_path)
    status = {"service_uid": "s", "status": "running", "timestamp": "2026-01-01T00:00:00Z"}
    h.dispatcher.emit("update_service_status", status)
    beat = {"deployment_uid": "d", "timestamp": 1}
    h.dispatcher.emit("deployment_heartbeat", beat)
    head = h.outbox.peek()
    assert envelope.decode(head[1]).raw == {"type": "event", "event": "update_service_status", "data": status}
    assert h.direct == [{"type": "event", "event": "deployment_heartbeat", "data": beat}]


def test_call_context_and_event_sink_check_in_strict_mode():
    from agent.services.context import CallContext
    from agent.services import EventSink
    seen = []
    ctx = CallContext(None, "test", emit=lambda e, d: seen.append(e))
    with pytest.raises(EventSchemaError):
        ctx.emit("update_docker_config", {"service_uid": "s"})
    sink = EventSink()
    sink.target = lambda e, d: seen.append(e)
    with pytest.raises(EventSchemaError):
        sink.emit("container_log", {"service_uid": "s"})
    assert seen == []


# Events built outside the dispatcher's path (restart recovery, the queued deploy): checked here.

def test_restart_terminal_events_conform(tmp_path):
    from agent import config
    from agent.services import Services
    from agent.services.backups import BackupsService
    from agent.worker import recovery
    backups = BackupsService(Services(config.defaults().replace(state_dir=str(tmp_path),
                                                                pulseup_backup_dir=str(tmp_path))))
    for record in ({"deployment_uid": "d", "service_uid": "s"}, {"deployment_uid": "d"}):
        event, data = recovery.deployment_failed(record)
        assert events.problems(event, data) is None, (record, events.problems(event, data))
    for record in ({"backup_uid": "b", "service_uid": "s"}, {"backup_uid": "b", "backup_type": "scheduled"}):
        event, data = backups.recover(record, recovery.RESTARTED)
        assert events.problems(event, data) is None, (record, events.problems(event, data))


def test_recovery_events_conform():
    from agent.services.database import service as database_service
    from agent.services.deploy import recovery as deploy_recovery
    deploy = {"kind": "deploy", "deployment_uid": "d", "service_uid": "s", "version": 3}
    for status in ("completed", "failed"):
        for event, data in deploy_recovery.operation_events(deploy, status, "m", "web-1"):
            assert events.problems(event, data) is None
        rollback = {"kind": "rollback", "service_uid": "s", "rolled_back_to": "img:1"}
        for event, data in deploy_recovery.operation_events(rollback, status, "m"):
            assert events.problems(event, data) is None
    restore = {"phase": "safety_backup", "safety_backup_uid": "b", "service_uid": "s"}
    for event, data in database_service._safety_backup_failed(restore):
        assert events.problems(event, data) is None


def test_queued_deploy_event_conforms():
    from agent.handlers import deploy
    event, data = deploy._queued({"deployment_uid": "d", "service_uid": "s"})
    assert events.problems(event, data) is None


def test_hardware_event_conforms(tmp_path):
    from agent.services.system import SystemService
    from tests.unit.fakes import make_config
    info = SystemService(make_config(tmp_path)).hardware_info()
    assert events.problems("register_hardware_info", SystemService.register_payload(info)) is None
    assert events.problems("register_hardware_info", info) is not None     # the nested form is not the event
