import json
import os

import pytest
from hypothesis import given, settings, strategies as st

from agent.protocol import envelope
from agent.protocol.envelope import ProtocolError
from tests.unit.fakes import Harness


@pytest.mark.parametrize("text", [
    "not json", "[]", "1", '"x"', "{}", '{"type": 5}', '{"type":"call","event":"x"}',
    '{"type":"call","event":"x","call_id":7}', '{"event":"other"}', "[" * 100000,
    '{"type":"call","call_id":"a","event":"x","data":' + "9" * 5000 + "}",
])
def test_invalid_frames_are_protocol_errors(text):
    with pytest.raises(ProtocolError) as info:
        envelope.decode(text)
    assert info.value.code == "invalid_message"


def test_forms_are_classified():
    assert envelope.decode('{"type":"ping","data":3}').type == "ping"
    legacy = envelope.decode('{"event":"command","data":{"command":"agent.ping","data":{"a":1}}}')
    assert (legacy.type, legacy.event, legacy.data) == ("legacy", "agent.ping", {"a": 1})
    wrapped = envelope.decode('{"type":"event","event":"command","data":{"command":"x"}}')
    assert (wrapped.type, wrapped.event, wrapped.data_present) == ("event", "x", False)
    bad = envelope.decode('{"type":"call","call_id":"1","event":"call","data":{"event":3}}')
    assert bad.wrapper_error == "invalid call message format"
    extra = envelope.decode('{"type":"call","call_id":"1","event":"a","future":true}')
    assert extra.event == "a"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)
frames = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    st.fixed_dictionaries({}, optional={
        "type": st.sampled_from(["call", "event", "ping", "cancel", "response", "error", "x"]) | json_values,
        "event": st.sampled_from(["agent.ping", "command", "call", "test.sleep", "nope"]) | json_values,
        "call_id": st.text(max_size=10) | json_values,
        "data": json_values,
    }).map(json.dumps),
)


def test_fuzzed_frames_have_a_defined_outcome(tmp_path):
    harness = Harness(tmp_path)

    @given(frames)
    def check(text):
        try:
            message = envelope.decode(text)
        except ProtocolError as exc:
            assert exc.code == "invalid_message"
            return
        if message.type in ("call", "event", "legacy"):
            harness.dispatcher.handle(message)   # must never raise
    check()
    harness.dispatcher.pool.kill()


CI_CASES = 10_000 if os.environ.get("CI") == "true" else 500   # docs/design.md, "Test sizes"


@settings(max_examples=CI_CASES, deadline=None, derandomize=True)
@given(frames)
def test_decoder_never_fails_otherwise_than_invalid_message(text):
    try:
        message = envelope.decode(text)
    except ProtocolError as exc:
        assert exc.code == "invalid_message"
    else:
        assert isinstance(message.type, str)
