"""Wire-level fuzzing (issue 16): hypothesis builds frames and the devserver sends them over
the real TLS WebSocket to a real worker process (``python -m agent worker`` as nobody); after
every example an ordinary ``agent.ping`` must be answered.

Frames: arbitrary JSON (any code point, unpaired surrogate escapes, huge and non-finite
numbers, deep nesting), wrong types for every envelope field, non-JSON text and binary frames.
The `ci` profile runs ``CASES`` examples; ``bench/fuzz_wire.py`` runs the long version
(``PULSEUP_FUZZ_WIRE_CASES``).
"""

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from wsproto.events import BytesMessage

from tests.resilience.faults_support import WorkerProcess, fault_env, home  # noqa: F401 (fixtures)

CASES = int(os.environ.get("PULSEUP_FUZZ_WIRE_CASES", "300"))
PING_BOUND = 15.0        # generous: a ping is answered in milliseconds
SAFE_EVENTS = ["agent.ping", "server.stats.live", "agent.operations.list", "no.such.command", ""]
LONE = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
TEXT = st.one_of(st.text(max_size=40), st.text(alphabet=st.characters(codec="utf-8"), max_size=10),
                 st.builds(lambda a, s, b: a + s + b, st.text(max_size=5), LONE, st.text(max_size=5)))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), TEXT)
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)), max_leaves=20)
RAW_NUMBERS = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "9" * 5000,
                               "1" * 4300, "0.1e-999999", "-0"])


def _json_text(value):
    return json.dumps(value)     # ASCII: lone surrogates travel as \\udXXX escapes


@st.composite
def envelopes(draw):
    frame = {}
    for key, values in (("type", st.one_of(st.sampled_from(["call", "event", "cancel", "ping", "pong", "response",
                                                             "auth_challenge", "error", "x"]), JSON)),
                        ("event", st.one_of(st.sampled_from(SAFE_EVENTS), JSON)),
                        ("call_id", st.one_of(TEXT, JSON)),
                        ("data", JSON)):
        if draw(st.booleans()):
            frame[key] = draw(values)
    event = frame.get("event")
    if isinstance(event, str) and event not in SAFE_EVENTS:
        frame["event"] = "fuzz." + event     # never a real command that changes the host
    return _json_text(frame)


@st.composite
def number_frames(draw):
    return '{"type":"call","call_id":"n","event":"agent.ping","data":{"v":%s}}' % draw(RAW_NUMBERS)


FRAMES = st.one_of(
    envelopes().map(lambda t: ("text", t)),
    number_frames().map(lambda t: ("text", t)),
    JSON.map(lambda v: ("text", _json_text(v))),
    st.text(max_size=200).map(lambda t: ("text", t)),
    st.integers(1, 50_000).map(lambda n: ("text", "[" * n + "]" * n)),
    st.integers(1, 50_000).map(lambda n: ("text", '{"a":' * n + "1" + "}" * n)),
    st.binary(max_size=300).map(lambda b: ("binary", b)),
)


@pytest.fixture
def live_worker(home, devserver):
    worker = WorkerProcess(home, devserver, PING_INTERVAL="5", LOG_LEVEL="WARNING")
    worker.start()
    yield worker
    worker.stop()


def test_no_frame_stops_a_real_worker_from_answering(live_worker, devserver):
    sent = {"count": 0}

    @settings(max_examples=CASES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(frame=FRAMES)
    def one(frame):
        kind, payload = frame
        ws = devserver.hub.known(live_worker.uid).conn.ws
        if kind == "text":
            ws.send_text(payload)
        else:
            with ws._send_lock:
                ws._write(ws._ws.send(BytesMessage(data=payload)))
        reply = devserver.call(live_worker.uid, "agent.ping", {}, timeout=PING_BOUND)
        assert reply["success"] is True, (frame, reply)
        sent["count"] += 1

    one()
    assert sent["count"] >= min(CASES, 50)
    assert live_worker.proc.poll() is None, live_worker.output()[-3000:]
