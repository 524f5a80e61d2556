"""Restart recovery (docs/operations.md, "Restart recovery"): what a dead worker left behind is reported."""

import json
import os

from agent.errors import AgentError
from agent.protocol import envelope
from agent.services import interrupted
from agent.services.deploy.recovery import Outcome, result_of
from agent.worker.main import Worker
from agent.worker.outbox import CallLog
from tests.unit.fakes import make_config


def queued(worker):
    frames = []
    while (head := worker.outbox.peek()) is not None:
        frames.append(json.loads(head[1]))
        worker.outbox.ack(head[0])
    return frames


def _write_operations(cfg, records):
    with open(os.path.join(cfg.state_dir, "operations.json"), "w") as handle:
        json.dump(records, handle)


def test_interrupted_calls_and_operations_get_terminal_answers(tmp_path):
    cfg = make_config(tmp_path, websocket_url="wss://127.0.0.1:1/ws/agent_v2")
    os.makedirs(cfg.state_dir)
    calls = CallLog(cfg.state_dir)
    calls.start("c-running")
    calls.close()
    _write_operations(cfg, [{"operation_id": "backup:b1", "kind": "backup", "service_uid": "db", "backup_uid": "b1",
                             "backup_type": "scheduled"}])
    worker = Worker(cfg, identity=None)
    try:
        frames = queued(worker)
    finally:
        worker.close()
    response = next(f for f in frames if f["type"] == "response")
    assert response["call_id"] == "c-running"
    assert (response["data"]["code"], response["data"]["error"]) == ("internal", "agent restarted during operation")
    events = {f["event"]: f["data"] for f in frames if f["type"] == "event"}
    assert events["backup_status_update"]["backup_type"] == "scheduled"
    assert not os.path.exists(os.path.join(cfg.state_dir, "operations.json"))
    # a re-sent call_id after the restart is answered from the call log, not run
    again = CallLog(cfg.state_dir)
    expected = envelope.error_response("c-running", AgentError("internal", "agent restarted during operation"))
    assert again.answered("c-running") == expected


class FakeDeploy:
    """DeployService.recover as restart recovery sees it (the swap's Outcome made into its
    Result); records what it was given."""

    def __init__(self, outcome, failures=0):
        self.outcome, self.failures, self.records = outcome, failures, []

    def recover(self, record):
        self.records.append(record)
        if self.failures:
            self.failures -= 1
            raise AgentError("unavailable", "docker daemon unreachable")
        return result_of(record, self.outcome)


def _recover_with(worker, deploy):
    worker.services.__dict__["deploy"] = deploy        # Services.deploy is a cached_property
    worker.recovery.start(worker.dispatcher)
    assert worker.dispatcher.drain(30)


def _interrupted_deploy(cfg, phase_record=None):
    os.makedirs(cfg.state_dir)
    calls = CallLog(cfg.state_dir)
    calls.start("c-deploy")
    calls.close()
    _write_operations(cfg, [{"operation_id": "deploy:d1", "kind": "deploy", "service_uid": "web",
                             "deployment_uid": "d1", "call_id": "c-deploy"}])
    if phase_record is not None:
        interrupted.write(cfg.state_dir, phase_record)


def test_an_interrupted_deploy_is_answered_after_its_recovery_names_what_serves(tmp_path):
    cfg = make_config(tmp_path, websocket_url="wss://127.0.0.1:1/ws/agent_v2")
    _interrupted_deploy(cfg, {"kind": "deploy", "operation_id": "deploy:d1", "service_uid": "web",
                              "deployment_uid": "d1", "call_id": "c-deploy", "phase": "cleanup", "version": 2})
    worker = Worker(cfg, identity=None)
    try:
        assert queued(worker) == []                        # nothing before the recovery ran
        assert worker.calls.answered("c-deploy") is None
        outcome = Outcome("completed", "pulseup-app-web-v0002", ["removed pulseup-app-web-v0001"])
        deploy = FakeDeploy(outcome)
        _recover_with(worker, deploy)
        frames = queued(worker)
    finally:
        worker.close()
    assert deploy.records[0]["phase"] == "cleanup" and deploy.records[0]["call_id"] == "c-deploy"
    response = next(f for f in frames if f["type"] == "response")
    assert response["call_id"] == "c-deploy" and response["data"]["code"] == "internal"
    assert response["data"]["error"].startswith("agent restarted during operation; ")
    assert "pulseup-app-web-v0002 serves" in response["data"]["error"]
    assert response["data"]["data"]["serving_container"] == "pulseup-app-web-v0002"
    assert response["data"]["data"]["recovery"] == "completed"
    events = [(f["event"], f["data"]) for f in frames if f["type"] == "event"]
    assert [name for name, _ in events] == ["update_deployment_status", "update_service_status"]
    assert events[0][1]["status"] == "completed" and events[0][1]["container_name"] == "pulseup-app-web-v0002"
    assert events[1][1]["status"] == "running"
    assert interrupted.load_all(cfg.state_dir) == []


def test_a_second_crash_before_recovery_keeps_the_call_and_the_record(tmp_path, monkeypatch):
    cfg = make_config(tmp_path, websocket_url="wss://127.0.0.1:1/ws/agent_v2")
    _interrupted_deploy(cfg)
    Worker(cfg, identity=None).close()                     # "crashed" before recovery ran
    worker = Worker(cfg, identity=None)
    try:
        assert worker.recovery.owns_call("c-deploy")
        deploy = FakeDeploy(Outcome("failed", "pulseup-app-web-v0001", ["removed pulseup-app-web-v0002-candidate"]),
                            failures=1)
        monkeypatch.setattr("agent.worker.recovery.RETRY_WAIT", 0.01)
        _recover_with(worker, deploy)
        frames = queued(worker)
    finally:
        worker.close()
    assert len(deploy.records) == 2                        # one retry after Docker was unreachable
    response = next(f for f in frames if f["type"] == "response")
    assert "pulseup-app-web-v0001 serves" in response["data"]["error"]
    status = next(f["data"] for f in frames if f.get("event") == "update_deployment_status")
    assert (status["status"], status["code"]) == ("failed", "internal")
    assert "pulseup-app-web-v0001 serves" in status["error"]


def test_phase_records_survive_only_when_readable(tmp_path):
    state = str(tmp_path)
    log = interrupted.PhaseLog(state, "deploy", "deploy:d1", "web", call_id="c1", deployment_uid="d1")
    log.phase("health_check", version=2)
    assert interrupted.load_all(state) == [dict(log.record)]
    directory = os.path.join(state, interrupted.DIRECTORY)
    for name, body in (("garbage.json", b"{not json"), ("foreign.json", b'{"kind": "deploy"}'), ("x.tmp", b"")):
        _touch_file(os.path.join(directory, name), body)
    # a well-formed record under a name that is not its operation's: also refused
    _touch_file(os.path.join(directory, "moved.json"),
                json.dumps({"kind": "deploy", "operation_id": "deploy:other", "service_uid": "w"}).encode())
    assert [r["operation_id"] for r in interrupted.load_all(state)] == ["deploy:d1"]
    assert sorted(os.listdir(directory)) == [os.path.basename(interrupted._path(state, "deploy:d1"))]
    log.close()
    assert interrupted.load_all(state) == []


def test_the_fault_hook_fires_only_at_its_phase(tmp_path, monkeypatch):
    killed = []
    monkeypatch.setenv(interrupted.FAULT_ENV, "deploy:cleanup")
    monkeypatch.setattr(interrupted.os, "kill", lambda pid, sig: killed.append(sig))
    log = interrupted.PhaseLog(str(tmp_path), "rollback", "rollback:web", "web")
    log.phase("cleanup")
    deploy = interrupted.PhaseLog(str(tmp_path), "deploy", "deploy:d1", "web")
    deploy.phase("health_check")
    assert killed == []
    deploy.phase("cleanup")
    assert killed == [interrupted.signal.SIGKILL]
    assert {r["phase"] for r in interrupted.load_all(str(tmp_path))} == {"cleanup"}


def test_install_and_database_deploy_report_a_terminal_service_status(tmp_path):
    cfg = make_config(tmp_path, websocket_url="wss://127.0.0.1:1/ws/agent_v2")
    os.makedirs(cfg.state_dir)
    _write_operations(cfg, [{"operation_id": "install:web", "kind": "install", "service_uid": "web"},
                            {"operation_id": "x", "kind": "install", "service_uid": "../etc"},
                            {"operation_id": "y", "kind": "unknown", "service_uid": "web"}])
    interrupted.write(cfg.state_dir, {"kind": "future", "operation_id": "future:web", "service_uid": "web"})
    worker = Worker(cfg, identity=None)
    try:
        assert [r["operation_id"] for r in worker.recovery.pending] == ["install:web"]
        assert [r["operation_id"] for r in interrupted.load_all(cfg.state_dir)] == ["install:web"]
        _recover_with(worker, worker.services.deploy)      # the real hook: install needs no engine
        frames = queued(worker)
    finally:
        worker.close()
    status = [f["data"] for f in frames if f.get("event") == "update_service_status"]
    assert [(s["service_uid"], s["status"]) for s in status] == [("web", "failed")]
    assert "run it again" in status[0]["error"]


def _touch_file(path, body):
    with open(path, "wb") as handle:
        handle.write(body)
