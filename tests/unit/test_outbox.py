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


def test_journal_stays_bounded_during_an_hour_long_outage(tmp_path):
    """One hour of events while disconnected (one progress event a second, a terminal event
    a minute): the bounds hold, the journal file stays bounded, the order is kept."""
    outbox = Outbox(str(tmp_path), max_messages=200, max_bytes=64 * 1024)
    path = tmp_path / "outbox.journal"
    largest = 0
    for second in range(3600):
        status = "completed" if second % 60 == 59 else "in_progress"
        outbox.put(event(status, n=second))
        outbox.flush()
        largest = max(largest, path.stat().st_size)
        assert len(outbox) <= 200 and outbox.bytes <= 64 * 1024
    # live entries are at most 64 KiB; the journal may hold dead lines up to 4x the live ones
    assert largest < 6 * 64 * 1024 + 1000 * 200, largest
    outbox.close()
    frames = drain(Outbox(str(tmp_path)))
    numbers = [f["data"]["n"] for f in frames]
    assert numbers == sorted(numbers)
    assert sum(1 for f in frames if f["data"]["status"] == "completed") == 60   # never dropped
    assert numbers[-1] == 3599


def test_replay_drops_entries_that_cannot_be_sent(tmp_path):
    good = envelope.encode(envelope.response_frame("c1", True, {"ok": 1})).decode()
    lines = [
        json.dumps({"+": 1, "f": good, "d": False, "k": "c1"}),
        json.dumps({"+": 2, "f": '{"type":"event","event":"x","data":"\udcff"}', "d": True, "k": None}),
        json.dumps({"+": 3, "f": "not json", "d": True, "k": None}),
        json.dumps({"+": "4", "f": good, "d": False, "k": None}),
        json.dumps(["not", "a", "record"]),
        json.dumps({"-": None}),
        '{"+": 5, "f": torn',
    ]
    (tmp_path / "outbox.journal").write_text("\n".join(lines) + "\n")
    outbox = Outbox(str(tmp_path))
    assert [json.loads(f)["call_id"] for f in [outbox.peek()[1]]] == ["c1"]
    assert len(outbox) == 1
    outbox.close()


def test_unencodable_frames_never_reach_the_journal(tmp_path):
    outbox = Outbox(str(tmp_path))
    assert outbox.put(envelope.event_frame("update_docker_config", {"f": "\udcff"})) is False
    outbox.put(envelope.response_frame("c9", True, {"name": "\ud800"}), key="c9")
    outbox.close()
    frames = drain(Outbox(str(tmp_path)))
    assert len(frames) == 1 and frames[0]["call_id"] == "c9"
    assert frames[0]["data"]["code"] == "internal" and "$.data.data.name" in frames[0]["data"]["error"]


def test_an_oversized_event_is_dropped_and_counted_an_oversized_reply_answered(tmp_path):
    big = "x" * (envelope.MAX_OUTBOUND_BYTES + 1)
    before = envelope.unencodable["update_docker_config"]
    outbox = Outbox(str(tmp_path))
    assert outbox.put(envelope.event_frame("update_docker_config", {"service_uid": "s", "f": big})) is False
    outbox.put(envelope.response_frame("c8", True, {"logs": big}), key="c8")
    outbox.close()
    frames = drain(Outbox(str(tmp_path)))
    assert [f["call_id"] for f in frames] == ["c8"] and frames[0]["data"]["code"] == "internal"
    assert envelope.unencodable["update_docker_config"] == before + 1


def test_call_log_replay_skips_malformed_records(tmp_path):
    (tmp_path / "calls.journal").write_text("\n".join([
        json.dumps({"c": "a", "s": "run", "t": 1.0}),
        json.dumps({"c": 5, "s": "run", "t": 1.0}),
        json.dumps({"c": "b", "s": "done", "t": "x", "r": {}}),
        json.dumps("string"),
    ]) + "\n")
    assert CallLog(str(tmp_path)).interrupted == ["a"]
