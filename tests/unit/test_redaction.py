"""The redaction registry is reference-counted (issue 17 item 4): a secret stays masked while
any call holding it runs; process-lifetime registrations stay for good."""
import io
import logging

import gevent
import gevent.event

from agent import log
from agent.services.context import CallContext


def _logger():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(log.RedactingFilter())
    logger = logging.getLogger("agent.test_redaction")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_two_concurrent_calls_sharing_a_token():
    """The first call ends while the second still runs: the second's lines stay masked."""
    logger, stream = _logger()
    token = "shared-token-7f3a"
    second_started, first_done = gevent.event.Event(), gevent.event.Event()

    def second():
        ctx = CallContext(None, "test.second")
        try:
            ctx.secret(token)
            second_started.set()
            first_done.wait(timeout=10)
            logger.info("second still uses %s", token)
        finally:
            ctx.close()

    def first():
        second_started.wait(timeout=10)
        ctx = CallContext(None, "test.first")
        try:
            ctx.secret(token)
            logger.info("first uses %s", token)
        finally:
            ctx.close()
            first_done.set()

    gevent.joinall([gevent.spawn(second), gevent.spawn(first)], timeout=10, raise_error=True)
    text = stream.getvalue()
    assert "first uses ***" in text and "second still uses ***" in text, text
    assert token not in text
    assert not log.is_masked(token)                 # both calls ended: the value is released
    assert log.redact(f"x {token}") == f"x {token}"


def test_holds_are_counted_per_value():
    value = "held-twice-value"
    log.hold_secret(value)
    log.hold_secret(value)
    log.release_secret(value)
    assert log.redact(value) == log.MASK
    log.release_secret(value)
    assert log.redact(value) == value
    log.release_secret(value)                       # an extra release never goes negative
    log.hold_secret(value)
    assert log.redact(value) == log.MASK
    log.release_secret(value)
    assert log.redact(value) == value


def test_process_lifetime_registration_outlives_every_call():
    value = "process-lifetime-token"
    log.register_secret(value)
    try:
        ctx = CallContext(None, "test.call")
        ctx.secret(value)
        ctx.close()
        ctx.close()                                 # closing twice releases once
        assert log.redact(f"a {value} b") == f"a {log.MASK} b"
    finally:
        log.forget_secret(value)
    assert log.redact(value) == value


def test_short_values_are_never_registered():
    log.hold_secret("abc")
    log.register_secret("xyz")
    assert log.redact("abc xyz") == "abc xyz"
    log.release_secret("abc")
