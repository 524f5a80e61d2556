"""Reconnect backoff: "equal jitter" (docs/protocol.md, "Connection").

The delay ``d`` starts at RECONNECT_INTERVAL and doubles up to
RECONNECT_BACKOFF_MAX; each wait is uniform in [d/2, d]. After
RECONNECT_MAX_ATTEMPTS consecutive failures (0 = never), or after the first
one when RECONNECT_ENABLED is false, :meth:`Backoff.next_delay` returns None:
the worker gives up with its dedicated exit code.
"""

import random


class Backoff:
    def __init__(self, initial, cap, max_attempts=0, enabled=True, rng=None):
        self.initial = max(initial, 0.001)
        self.cap = max(cap, self.initial)
        self.max_attempts = max_attempts
        self.enabled = enabled
        self.rng = rng or random.Random()
        self.failures = 0

    @classmethod
    def from_config(cls, cfg, rng=None):
        return cls(cfg.reconnect_interval, cfg.reconnect_backoff_max,
                   cfg.reconnect_max_attempts, cfg.reconnect_enabled, rng)

    def ceiling(self, failures):
        """The un-jittered delay after ``failures`` consecutive failures (1-based)."""
        return min(self.cap, self.initial * 2 ** min(failures - 1, 62))

    def next_delay(self):
        """Record a failure; the seconds to wait, or None to give up."""
        self.failures += 1
        if not self.enabled or (self.max_attempts and self.failures >= self.max_attempts):
            return None
        ceiling = self.ceiling(self.failures)
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self):
        self.failures = 0
