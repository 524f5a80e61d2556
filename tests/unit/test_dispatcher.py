import gevent
import pytest

from tests.unit.fakes import Harness


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path, max_concurrent_commands=4)
    yield harness
    harness.dispatcher.pool.kill()


def test_ping_echoes_data_and_null(h):
    h.call("a", "agent.ping", {"x": [1, 2]})
    h.send({"type": "call", "call_id": "b", "event": "agent.ping", "data": None})
    h.send({"type": "call", "call_id": "c", "event": "agent.ping"})
    got = h.wait(["a", "b", "c"])
    assert got["a"][0]["data"]["echo"] == {"x": [1, 2]}
    assert got["b"][0]["data"]["echo"] is None
    assert got["c"][0]["data"]["echo"] == {}
    assert got["a"][0]["success"] is True and got["a"][0]["code"] == ""


def test_unknown_command_direct_and_wrapped(h):
    h.call("a", "nope.cmd")
    h.send({"type": "call", "call_id": "b", "event": "command", "data": {"command": "nope.cmd", "data": {}}})
    h.send({"type": "call", "call_id": "c", "event": "command", "data": {"data": {}}})
    got = h.wait(["a", "b", "c"])
    assert got["a"][0]["error"] == "unknown event: nope.cmd" and got["a"][0]["code"] == "unimplemented"
    assert got["b"][0]["error"] == "unknown command: nope.cmd"
    assert got["c"][0]["code"] == "invalid_argument" and got["c"][0]["error"] == "invalid command format"
    assert got["c"][0]["data"]["code"] == "invalid_argument"


def test_double_wrapper_and_legacy_forms(h):
    h.send({"type": "call", "call_id": "outer", "event": "call",
            "data": {"type": "call", "call_id": "inner", "event": "agent.ping", "data": {"n": 1}}})
    h.send({"event": "command", "data": {"command": "agent.ping", "data": {"n": 2}}})
    got = h.wait(["outer"])
    assert got["outer"][0]["data"]["echo"] == {"n": 1}
    legacy = [f for f in h.direct if f.get("event") == "command_response"]
    assert legacy and legacy[0]["data"]["data"]["echo"] == {"n": 2}


def test_invalid_payload_names_field(h):
    h.call("a", "test.sleep", {"seconds": "1"})
    got = h.wait(["a"])
    assert got["a"][0]["code"] == "invalid_argument"
    assert got["a"][0]["data"]["field"] == "seconds"


def test_timeout_fields_validated(h):
    h.call("a", "test.sleep", {"timeout_seconds": 5, "_timeout_s": 6})
    h.call("b", "test.sleep", {"timeout_seconds": 601})
    h.call("c", "test.sleep", {"timeout_seconds": -1})
    got = h.wait(["a", "b", "c"])
    assert all(got[k][0]["code"] == "invalid_argument" for k in "abc")


def test_deadline_exceeded(h):
    h.call("a", "test.sleep", {"seconds": 5, "timeout_seconds": 0.2})
    got = h.wait(["a"])
    assert got["a"][0]["code"] == "deadline_exceeded"


def test_plain_command_uses_command_timeout(tmp_path):
    h = Harness(tmp_path, command_timeout=0.2)
    h.call("a", "test.plain_sleep", {"seconds": 5})
    assert h.wait(["a"])["a"][0]["code"] == "deadline_exceeded"


def test_cancel_running_and_queued(h):
    h.call("a", "test.sleep", {"seconds": 5})
    h.call("b", "test.sleep", {"seconds": 5})
    gevent.sleep(0.05)
    listing = h.dispatcher.operations.listing()
    assert [op["state"] for op in listing] == ["running", "queued"]
    assert h.dispatcher.cancel("b") == "cancelling"
    assert h.dispatcher.cancel("a") == "cancelling"
    got = h.wait(["a", "b"])
    assert got["a"][0]["code"] == "cancelled" and got["b"][0]["code"] == "cancelled"
    assert got["a"][0]["data"]["operation_id"].startswith("sleep:svc")


def test_per_service_fifo(h):
    order = []
    h.dispatcher.registry.add("test.record", lambda ctx, r: (gevent.sleep(0.05), order.append(r["n"]))[1] or {},
                              _record_schema(), operation=_record_spec())
    for n in range(5):
        h.call(f"c{n}", "test.record", {"service_uid": "one", "n": n})
    h.wait([f"c{n}" for n in range(5)])
    assert order == [0, 1, 2, 3, 4]


def _record_schema():
    from agent.protocol.fields import RequestSchema, StrictInteger, Uid

    class Record(RequestSchema):
        service_uid = Uid(required=True)
        n = StrictInteger(required=True)
    return Record()


def _record_spec():
    from agent.operations import OperationSpec, by_service
    return OperationSpec("test", lambda r: f"record:{r['n']}", 30, 60, lock_key=by_service)


def test_queue_limit_is_conflict(h):
    for n in range(18):
        h.call(f"c{n}", "test.sleep", {"seconds": 2})
    got = h.wait(["c17"])
    assert got["c17"][0]["code"] == "conflict" and "queue is full" in got["c17"][0]["error"]


def test_pool_full_answers_unavailable_after_wait(h):
    for n in range(4):
        h.call(f"s{n}", "test.plain_sleep", {"seconds": 3})
    h.call("late", "test.plain_sleep", {"seconds": 0})
    got = h.wait(["late"], timeout=5)
    assert got["late"][0]["code"] == "unavailable"


def test_same_call_id_never_runs_twice(h):
    runs = []
    h.dispatcher.registry.add("test.count", lambda ctx, r: runs.append(1) or {"n": len(runs)})
    h.call("x", "test.count")
    h.call("x", "test.count")      # running or queued: no second run, no extra reply
    first = h.wait(["x"])
    h.call("x", "test.count")      # already answered: replayed from the call log
    again = h.wait(["x"])
    assert len(runs) == 1
    assert len(first["x"]) == 1 and again["x"][0] == first["x"][0]


def test_internal_error_is_reported(h):
    h.call("a", "test.boom")
    got = h.wait(["a"])
    assert got["a"][0]["code"] == "internal" and got["a"][0]["error"].startswith("internal error:")


def test_draining_refuses_new_calls(h):
    h.dispatcher.draining = True
    h.call("a", "agent.ping")
    assert h.wait(["a"])["a"][0]["code"] == "unavailable"


def test_disabled_commands(tmp_path):
    h = Harness(tmp_path, pulseup_disabled_commands=("agent.ping",))
    h.call("a", "agent.ping")
    assert h.wait(["a"])["a"][0]["code"] == "permission_denied"


def test_operations_list_and_cancel_commands(h):
    h.call("a", "test.sleep", {"service_uid": "web", "seconds": 5})
    gevent.sleep(0.05)
    h.call("l", "agent.operations.list", {"service_uid": "web"})
    listed = h.wait(["l"])["l"][0]["data"]["operations"]
    assert listed[0]["call_id"] == "a" and listed[0]["kind"] == "test"
    h.call("k", "agent.operations.cancel", {"call_id": "a"})
    got = h.wait(["k", "a"])
    assert got["k"][0]["data"]["state"] == "cancelling"
    assert got["a"][0]["code"] == "cancelled"
    h.call("m", "agent.operations.cancel", {"call_id": "zzz"})
    assert h.wait(["m"])["m"][0]["code"] == "not_found"


def test_restart_answers_interrupted_calls(tmp_path):
    h = Harness(tmp_path)
    h.call("a", "test.sleep", {"seconds": 30})
    gevent.sleep(0.05)
    h.calls.flush()
    h.dispatcher.pool.kill()
    from agent.worker.outbox import CallLog
    again = CallLog(h.cfg.state_dir)
    assert again.interrupted == ["a"]


def test_read_only_form_of_an_operation_command_never_waits(h):
    from agent.operations import OperationSpec, by_service
    spec = OperationSpec("test", lambda r: f"rw:{r['service_uid']}", 60, 600, lock_key=by_service,
                         applies=lambda r: r["seconds"] > 0)
    h.dispatcher.registry.add("test.rw", lambda ctx, r: gevent.sleep(r["seconds"]) or {}, _sleepish(), operation=spec)
    h.call("w", "test.rw", {"service_uid": "s", "seconds": 2})
    gevent.sleep(0.05)
    h.call("r", "test.rw", {"service_uid": "s", "seconds": 0})
    got = h.wait(["r"], timeout=1)
    assert got["r"][0]["success"] and len(h.dispatcher.operations.listing()) == 1


def _sleepish():
    from agent.protocol.fields import RequestSchema, StrictNumber, Uid

    class Sleep(RequestSchema):
        service_uid = Uid(required=True)
        seconds = StrictNumber(required=True)
    return Sleep()


def test_per_request_default_timeout(h):
    from agent.operations import OperationSpec
    spec = OperationSpec("test", lambda r: "pr", lambda r: 0.2 if r["seconds"] > 1 else 60, 600)
    h.dispatcher.registry.add("test.pr", lambda ctx, r: gevent.sleep(r["seconds"]) or {}, _sleepish(), operation=spec)
    h.call("p", "test.pr", {"service_uid": "s", "seconds": 5})
    assert h.wait(["p"])["p"][0]["code"] == "deadline_exceeded"


def test_unwrappable_command_is_unknown_through_the_wrapper(h):
    h.dispatcher.registry.add("test.special", lambda ctx, r: {"ok": True}, wrappable=False)
    h.call("d", "test.special")
    h.send({"type": "call", "call_id": "w", "event": "command", "data": {"command": "test.special"}})
    got = h.wait(["d", "w"])
    assert got["d"][0]["success"] and got["w"][0]["code"] == "unimplemented"


def test_waiting_operation_announces_its_queued_phase(h):
    from agent.operations import OperationSpec, by_service
    spec = OperationSpec("test", lambda r: f"q:{r['seconds']}", 60, 600, lock_key=by_service,
                         queued_event=lambda r: ("update_deployment_status", {
                             "deployment_uid": "d", "service_uid": r["service_uid"], "status": "in_progress",
                             "phase": "queued", "timestamp": 1}))
    h.dispatcher.registry.add("test.q", lambda ctx, r: gevent.sleep(r["seconds"]) or {}, _sleepish(), operation=spec)
    h.call("one", "test.q", {"service_uid": "s", "seconds": 0.3})
    h.call("two", "test.q", {"service_uid": "s", "seconds": 0.01})
    events = []
    while (head := h.outbox.peek()) is not None:
        events.append(head[1])
        h.outbox.ack(head[0])
    assert any(b'"phase":"queued"' in text for text in events)
    h.wait(["one", "two"])


def test_full_registry_has_every_catalogued_command():
    from agent.handlers import build_registry
    names = set(build_registry().names())
    for name in ("agent.ping", "agent.hardware.info", "server.stats.live", "agent.command.execute",
                 "service.app.deploy", "service.deploy.rollback", "service.domain.manage", "database.deploy",
                 "database.backup.download", "database.backup.automation.update", "agent.update.apply",
                 "monitoring.alerts.setup", "server.ssh_key.add", "agent.operations.cancel"):
        assert name in names, name
