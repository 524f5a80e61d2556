import json

from agent.protocol import envelope
from agent.worker.outbox import CallLog, Outbox


def event(status="in_progress", n=0):
    return envelope.event_frame("update_deployment_status", {"status": status, "n": n})


def drain(outbox):
    frames = []
    while (head := outbox.peek()) is not None:
        frames.append(json.loads(head[1]))
        outbox.ack(head[0])
    return frames


def test_order_survives_restart(tmp_path):
    outbox = Outbox(str(tmp_path))
    for n in range(5):
        outbox.put(event(n=n))
    outbox.put(envelope.response_frame("c1", True, {"ok": 1}), key="c1")
    seq, _ = outbox.peek()
    outbox.ack(seq)
    outbox.close()
    again = Outbox(str(tmp_path))
    assert again.has_key("c1")
    frames = drain(again)
    assert [f["data"].get("n") for f in frames[:4]] == [1, 2, 3, 4]
    assert frames[-1]["call_id"] == "c1"
    again.close()
    assert drain(Outbox(str(tmp_path))) == []


def test_bound_drops_oldest_non_terminal_events_first(tmp_path):
    outbox = Outbox(str(tmp_path), max_messages=3)
    outbox.put(event(n=1))
    outbox.put(envelope.response_frame("c1", True), key="c1")
    outbox.put(event("completed", n=2))
    outbox.put(event(n=3))                 # drops n=1
    assert outbox.dropped == 1
    frames = drain(outbox)
    assert [f.get("call_id") or f["data"]["n"] for f in frames] == ["c1", 2, 3]


def test_full_of_responses_refuses_events_and_reports_full(tmp_path):
    outbox = Outbox(str(tmp_path), max_messages=2)
    outbox.put(envelope.response_frame("a", True), key="a")
    outbox.put(envelope.response_frame("b", True), key="b")
    assert outbox.full()
    assert outbox.put(event()) is False and outbox.dropped == 1
    assert outbox.put(envelope.response_frame("c", True), key="c")   # never lose a response
    assert len(outbox) == 3


def test_byte_bound(tmp_path):
    outbox = Outbox(str(tmp_path), max_bytes=600)
    for n in range(10):
        outbox.put(event(n=n))
    assert outbox.bytes <= 600 and outbox.dropped > 0


def test_torn_journal_line_is_ignored(tmp_path):
    outbox = Outbox(str(tmp_path))
    outbox.put(event(n=1))
    outbox.close()
    with open(tmp_path / "outbox.journal", "a") as handle:
        handle.write('{"+": 9, "f": "tor')
    assert len(Outbox(str(tmp_path))) == 1


def test_call_log_remembers_answers_and_interrupted_calls(tmp_path):
    calls = CallLog(str(tmp_path), limit=2)
    calls.start("a")
    calls.finish("a", {"n": 1})
    calls.start("b")
    calls.close()
    again = CallLog(str(tmp_path), limit=2)
    assert again.answered("a") == {"n": 1}
    assert again.interrupted == ["b"]
    for name in "cde":
        again.finish(name, {})
    assert again.answered("a") is None        # bounded to the last `limit`
