import random

from agent.worker.backoff import Backoff


def test_schedule_doubles_to_cap_with_equal_jitter():
    backoff = Backoff(1, 8, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(6)]
    ceilings = [1, 2, 4, 8, 8, 8]
    for delay, ceiling in zip(delays, ceilings):
        assert ceiling / 2 <= delay <= ceiling


def test_max_attempts_and_reset():
    backoff = Backoff(1, 60, max_attempts=3)
    assert backoff.next_delay() is not None
    assert backoff.next_delay() is not None
    assert backoff.next_delay() is None
    backoff.reset()
    assert backoff.next_delay() is not None


def test_disabled_means_one_attempt():
    assert Backoff(1, 60, enabled=False).next_delay() is None


def test_never_a_tight_loop():
    backoff = Backoff(0, 0)
    assert all(backoff.next_delay() > 0 for _ in range(50))
