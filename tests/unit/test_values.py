"""agent.values helpers that have no other home in the tests."""

import pytest


def test_read_exactly_whole_none_or_truncated():
    from agent.values import TruncatedFrame, read_exactly

    def reader(*pieces):
        parts = list(pieces)
        return lambda n: parts.pop(0)[:n] if parts else b""

    assert read_exactly(reader(b"ab", b"c", b"def"), 4) == b"abcd"
    assert read_exactly(reader(), 4) is None
    with pytest.raises(TruncatedFrame):
        read_exactly(reader(b"ab"), 4)
