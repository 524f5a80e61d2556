"""The block path of log streaming (issue 19: one object per run of frames, not per line)
gives the same lines and the same container_log texts as the line path."""
import random

import pytest

from agent.errors import AgentError
from agent.services.app import log_streams as docker_log_streams, logs as docker_logs
from agent.services.app.log_streams import _batches, _events
from agent.services.app.logs import LogReader, decode
from tests.unit.test_docker_fakes import app, cfg, docker_service, fake_client  # noqa: F401 (fixtures)
from tests.unit.test_docker_logs import FakeResponse, frame, responses  # noqa: F401 (fixture)

PIECES = [b"a", b"bc", b"\n", b"\r\n", b"\r", "é".encode(), "€".encode()[:2], b"\xff", b"line\n", b"x" * 7]


def random_stream(rng):
    frames = [frame(rng.choice((1, 2)), b"".join(rng.choice(PIECES) for _ in range(rng.randint(1, 12))))
              for _ in range(rng.randint(1, 30))]
    data = b"".join(frames)
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 8))))
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


def read(docker_service, fake_client, responses, chunks, method):  # noqa: F811
    container = app(fake_client, "web", 1)
    responses[0].append(FakeResponse(chunks))
    return list(getattr(LogReader(docker_service, container), method)())


def expected_texts(lines):
    return [(stream, "\n".join(decode(line) for line in batch)) for stream, batch in _batches(lines)]


@pytest.mark.parametrize("seed", range(200))
def test_runs_match_lines(docker_service, fake_client, responses, monkeypatch, seed):  # noqa: F811
    rng = random.Random(seed)
    limit = rng.choice((4, 9, 64 * 1024))
    monkeypatch.setattr(docker_logs, "MAX_LINE_BYTES", limit)
    monkeypatch.setattr(docker_log_streams, "EVENT_BYTES", max(limit, 16))
    chunks = random_stream(rng)
    lines = [(s, bytes(line)) for s, line in read(docker_service, fake_client, responses, chunks, "lines")]
    blocks = read(docker_service, fake_client, responses, chunks, "runs")
    assert all(block.endswith(b"\n") for _, block in blocks)
    as_lines = [(s, line) for s, block in blocks for line in block.split(b"\n")[:-1]]
    assert as_lines == lines
    assert all(len(line) <= limit for _, line in as_lines)
    texts = list(_events(blocks))
    assert "\n".join(t for _, t in texts) == "\n".join(t for _, t in expected_texts(lines))
    assert all(len(t.encode("utf-8", "surrogateescape")) <= 3 * max(limit, 16) for _, t in texts)
    assert runs_of([s for s, _ in texts]) == runs_of([s for s, _ in expected_texts(lines)])


def runs_of(streams):
    return [s for i, s in enumerate(streams) if i == 0 or streams[i - 1] != s]


def test_events_join_one_stream_and_keep_the_order():
    blocks = [("stdout", b"a\nb\n"), ("stdout", b"c\n"), ("stderr", b"d\n"), ("stdout", b"e\n")]
    assert list(_events(blocks)) == [("stdout", "a\nb\nc"), ("stderr", "d"), ("stdout", "e")]


def test_events_are_cut_at_line_ends_within_the_size(monkeypatch):
    monkeypatch.setattr(docker_log_streams, "EVENT_BYTES", 10)
    blocks = [("stdout", b"aaaa\nbbbb\ncccc\n" + b"d" * 10 + b"\n")]
    assert list(_events(blocks)) == [("stdout", "aaaa\nbbbb"), ("stdout", "cccc"), ("stdout", "d" * 10)]


class Pieces:
    """A file whose read1() returns the given pieces, then b""."""

    def __init__(self, pieces):
        self.pieces = list(pieces)

    def read1(self, size):
        return self.pieces.pop(0) if self.pieces else b""


def chunked(parts, extension=b""):
    return b"".join(b"%x%s\r\n%s\r\n" % (len(p), extension, p) for p in parts if p) + b"0\r\n\r\n"


@pytest.mark.parametrize("seed", range(50))
def test_dechunk_gives_the_body_whatever_the_reads(seed):
    rng = random.Random(seed)
    parts = [bytes(rng.randrange(256) for _ in range(rng.randint(1, 40))) for _ in range(rng.randint(1, 20))]
    data = chunked(parts, rng.choice((b"", b";name=value")))
    cuts = sorted(rng.sample(range(1, len(data)), rng.randint(0, min(10, len(data) - 1))))
    pieces = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
    assert b"".join(docker_logs._dechunk(Pieces(pieces))) == b"".join(parts)


@pytest.mark.parametrize("bad", [b"-5\r\nabc", b"+5\r\nabcde\r\n", b"1_0\r\n", b" 5\r\n", b"zz\r\n",
                                 b"fffffffff\r\n", b"5" * 2000])
def test_dechunk_refuses_malformed_chunk_headers(bad):
    with pytest.raises(AgentError) as info:
        list(docker_logs._dechunk(Pieces([bad])))
    assert info.value.code == "unavailable"


def test_dechunk_ends_when_the_connection_closes():
    assert list(docker_logs._dechunk(Pieces([b"3\r\nabc\r\n2\r\nd"]))) == [b"abc"]
