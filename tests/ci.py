"""CI-awareness of the whole suite (issue 18): with CI=true nothing may skip.

CI has run scripts/install-test-deps.sh as root, so a test that would skip there (no root,
a tool missing, no cached rootfs...) means a broken setup and must fail. Local runs keep
their skips. `unavailable(reason)` is the explicit form for helpers; the report hook
below turns any other skip (a `skipif` mark, a `pytest.skip` in a fixture) into a failure,
so a skip added later cannot quietly pass CI. Expected failures (xfail) are not skips.
"""
import os

import pytest


def in_ci():
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason):
    """pytest.skip(reason) locally; pytest.fail(reason) when CI=true."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: every test must run)", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (in_ci() and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped with CI=true, which must not happen: {reason}"
