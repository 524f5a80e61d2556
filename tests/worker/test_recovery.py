"""Restart recovery (decisions 5, commands.md 1.8.7): what a dead worker left behind is reported."""

import json
import os

from agent.errors import AgentError
from agent.protocol import envelope
from agent.worker.main import Worker
from agent.worker.outbox import CallLog
from tests.unit.fakes import make_config


def queued(worker):
    frames = []
    while (head := worker.outbox.peek()) is not None:
        frames.append(json.loads(head[1]))
        worker.outbox.ack(head[0])
    return frames


def test_interrupted_calls_and_operations_get_terminal_answers(tmp_path):
    cfg = make_config(tmp_path, websocket_url="wss://127.0.0.1:1/ws/agent_v2")
    os.makedirs(cfg.state_dir)
    calls = CallLog(cfg.state_dir)
    calls.start("c-running")
    calls.close()
    with open(os.path.join(cfg.state_dir, "operations.json"), "w") as handle:
        json.dump([{"operation_id": "deploy:d1", "kind": "deploy", "service_uid": "web", "deployment_uid": "d1"},
                   {"operation_id": "backup:b1", "kind": "backup", "service_uid": "db", "backup_uid": "b1",
                    "backup_type": "scheduled"}], handle)
    worker = Worker(cfg, identity=None)
    try:
        frames = queued(worker)
    finally:
        worker.close()
    response = next(f for f in frames if f["type"] == "response")
    assert response["call_id"] == "c-running"
    assert (response["data"]["code"], response["data"]["error"]) == ("internal", "agent restarted during operation")
    events = {f["event"]: f["data"] for f in frames if f["type"] == "event"}
    assert events["update_deployment_status"]["status"] == "failed"
    assert events["update_deployment_status"]["deployment_uid"] == "d1"
    assert events["backup_status_update"]["backup_type"] == "scheduled"
    assert not os.path.exists(os.path.join(cfg.state_dir, "operations.json"))
    # a re-sent call_id after the restart is answered from the call log, not run
    again = CallLog(cfg.state_dir)
    expected = envelope.error_response("c-running", AgentError("internal", "agent restarted during operation"))
    assert again.answered("c-running") == expected
