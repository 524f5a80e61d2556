"""pytest plugin for `./test.sh -r`: fail a test during which a greenlet blocked the hub.

gevent's monitor thread reports a greenlet that runs longer than
``PULSEUP_BLOCKING_THRESHOLD`` seconds (default 0.1) without yielding; the
closest Python analogue of a race detector for this code. Not part of CI
(docs/design.md, "Test sizes"): the threshold is a machine-dependent timing.
"""

import os

import gevent
import pytest
from gevent import events

_reports = []


def pytest_configure(config):
    # Must be set before the hub exists; test.sh also exports GEVENT_MONITOR_THREAD_ENABLE.
    gevent.config.monitor_thread = True
    gevent.config.max_blocking_time = float(os.environ.get("PULSEUP_BLOCKING_THRESHOLD", "0.1"))
    events.subscribers.append(_record)


def pytest_runtest_setup(item):
    gevent.sleep(0)   # the tracer starts watching once the hub has run


def _record(event):
    if isinstance(event, events.EventLoopBlocked):
        _reports.append("".join(event.info[:40]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    del _reports[:]
    yield
    if _reports:
        pytest.fail("the gevent hub was blocked for more than %ss:\n%s"
                    % (gevent.config.max_blocking_time, _reports[0]), pytrace=False)
