"""IPC framing and envelope schemas (docs/protocol.md, "Supervisor IPC")."""

import json
import os
import struct

import pytest
from hypothesis import given, settings, strategies as st

from agent.protocol import ipc

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=4))
def test_roundtrip_any_object(message):
    frame = ipc.encode(message)
    length = ipc.body_length(frame[:4])
    assert length == len(frame) - 4
    assert ipc.decode(frame[4:]) == message


CI_CASES = 10_000 if os.environ.get("CI") == "true" else 500   # docs/design.md, "Test sizes"


@settings(max_examples=CI_CASES, deadline=None, derandomize=True)
@given(st.binary(max_size=200))
def test_decode_never_raises_anything_but_frame_error(body):
    try:
        value = ipc.decode(body)
    except ipc.FrameError:
        return
    assert isinstance(value, dict)


@pytest.mark.parametrize("body", [b"[1,2]", b"12", b'"x"', b"null", b"{", b"\xff\xfe{}", b""])
def test_non_objects_are_frame_errors(body):
    with pytest.raises(ipc.FrameError):
        ipc.decode(body)


def test_deep_nesting_is_a_frame_error_not_a_crash():
    with pytest.raises(ipc.FrameError):
        ipc.decode(b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}")


def test_header_over_limit_is_too_large():
    with pytest.raises(ipc.FrameTooLarge):
        ipc.body_length(struct.pack(">I", ipc.MAX_FRAME + 1))
    assert ipc.body_length(struct.pack(">I", ipc.MAX_FRAME)) == ipc.MAX_FRAME


def test_encode_refuses_oversize():
    with pytest.raises(ipc.FrameTooLarge):
        ipc.encode({"x": "a" * ipc.MAX_FRAME})


def test_encode_is_big_endian_utf8():
    frame = ipc.encode({"k": "é"})
    body = json.dumps({"k": "é"}, separators=(",", ":"), ensure_ascii=False).encode()
    assert frame == struct.pack(">I", len(body)) + body


def test_request_envelope_valid_and_defaults():
    request, error = ipc.load_request({"id": "1", "op": "worker.status", "extra": 1})
    assert error is None
    assert request == {"id": "1", "op": "worker.status", "args": {}, "timeout": None}
    request, _ = ipc.load_request({"id": "1", "op": "x", "args": None, "timeout": 2})
    assert request["args"] == {} and request["timeout"] == 2.0


@pytest.mark.parametrize("message,field", [
    ({"op": "x"}, "id"),
    ({"id": 7, "op": "x"}, "id"),
    ({"id": "a" * 65, "op": "x"}, "id"),
    ({"id": "", "op": "x"}, "id"),
    ({"id": "1"}, "op"),
    ({"id": "1", "op": ["x"]}, "op"),
    ({"id": "1", "op": "x", "args": [1]}, "args"),
    ({"id": "1", "op": "x", "timeout": "5"}, "timeout"),
    ({"id": "1", "op": "x", "timeout": -1}, "timeout"),
])
def test_request_envelope_refusals(message, field):
    request, error = ipc.load_request(message)
    assert request is None and error.startswith(field + ":")


def test_id_of_exactly_64_is_fine():
    request, error = ipc.load_request({"id": "a" * 64, "op": "x"})
    assert error is None and request["id"] == "a" * 64


def test_replies():
    assert ipc.ok_reply("1", None) == {"id": "1", "ok": True, "result": {}}
    reply = ipc.error_reply("1", "failed", "boom", exit_code=3)
    assert ipc.load_reply(reply)["error"] == {"code": "failed", "message": "boom", "exit_code": 3}
    with pytest.raises(ValueError):
        ipc.error_reply("1", "nonsense", "x")
    with pytest.raises(ipc.FrameError):
        ipc.load_reply({"id": "1"})
    with pytest.raises(ipc.FrameError):
        ipc.load_reply({"id": "1", "ok": False, "error": {"code": "x"}})
