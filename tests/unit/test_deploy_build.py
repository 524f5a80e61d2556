"""Build service: host-wide slots and the parsing of the engine's build progress stream."""
import time

import gevent
import pytest

from agent import config
from agent.errors import AgentError
from agent.handlers.context import CallContext
from agent.services.build import BuildService, _consume


def _service(slots):
    return BuildService(config.defaults().replace(pulseup_max_parallel_builds=slots), docker=None)


def test_slots_are_shared_and_waiters_are_told():
    build = _service(1)
    order, waited = [], []

    def job(name, hold):
        with build.slot(on_wait=lambda: waited.append(name)):
            order.append(f"{name}+")
            gevent.sleep(hold)
            order.append(f"{name}-")

    first = gevent.spawn(job, "a", 0.1)
    gevent.sleep(0)
    second = gevent.spawn(job, "b", 0)
    gevent.joinall([first, second], timeout=5)
    assert order == ["a+", "a-", "b+", "b-"] and waited == ["b"]


def test_waiting_for_a_slot_respects_the_deadline():
    build = _service(1)
    with build.slot():
        ctx = CallContext(None, "service.app.deploy", deadline=time.monotonic() + 0.05)
        with pytest.raises(AgentError) as info:
            with build.slot(ctx):
                pass
    assert info.value.code == "deadline_exceeded"
    with build.slot():          # the slot was released
        pass


def test_progress_lines_and_image_id():
    lines = []
    stream = [{"stream": "Step 1/2 : FROM base\n"}, {"stream": " ---> abc\nStep 2/2 : "},
              {"stream": "CMD x\n"}, {"aux": {"ID": "sha256:" + "f" * 64}}, {"stream": "Successfully built ffff\n"}]
    assert _consume(iter(stream), lambda text, level: lines.append((level, text))) == "sha256:" + "f" * 64
    assert [text for _, text in lines] == ["Step 1/2 : FROM base", " ---> abc", "Step 2/2 : CMD x",
                                           "Successfully built ffff"]
    assert _consume(iter([{"stream": "Successfully built 0123456789ab\n"}]), lambda *a: None) == "0123456789ab"


def test_build_error_is_command_failed_with_a_tail():
    stream = [{"stream": "Step 1/2 : RUN false\n"},
              {"errorDetail": {"code": 1, "message": "The command '/bin/sh -c false' returned a non-zero code: 1"},
               "error": "The command '/bin/sh -c false' returned a non-zero code: 1"}]
    with pytest.raises(AgentError) as info:
        _consume(iter(stream), lambda *a: None)
    error = info.value
    assert error.code == "command_failed" and error.details["exit_code"] == 1
    assert "RUN false" in error.details["stderr_tail"] and "non-zero code" in error.message


def test_a_stream_without_an_image_fails():
    with pytest.raises(AgentError) as info:
        _consume(iter([{"stream": "nothing\n"}]), lambda *a: None)
    assert info.value.code == "command_failed"
