"""Headless Debian Chromium driven through Selenium and Debian's chromedriver.

Without Chromium, chromedriver or selenium the browser tests skip locally and FAIL with
CI=true (the suite's rule for missing services: tests/integration/harness/require.py).
"""

import os
import shutil
import tempfile

import gevent

from tests.resilience import faults_support  # noqa: F401 (puts tests/integration on sys.path)
from harness import unavailable  # noqa: E402

CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage", "--window-size=1400,1000")


def chromium_path():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def start_browser():
    """A Selenium Chrome driver; skips or fails (CI=true) when something is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed (pip install -e .[test])")
    if chromium_path() is None or not os.path.exists(CHROMEDRIVER):
        unavailable("chromium and chromium-driver are not installed "
                    "(scripts/install-test-deps.sh)")
    profile = tempfile.mkdtemp(prefix="console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium_path()
    for flag in FLAGS + ("--user-data-dir=" + profile,):
        options.add_argument(flag)
    # The dev server's certificate comes from its own CA, unknown to Chromium.
    options.accept_insecure_certs = True
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.profile_dir = profile
    return driver


def stop_browser(driver):
    try:
        driver.quit()
    finally:
        shutil.rmtree(driver.profile_dir, ignore_errors=True)


def wait_for(predicate, what, timeout=60):
    """Poll `predicate()` until it returns something true; its value."""
    with gevent.Timeout(timeout, AssertionError("timed out waiting for " + what)):
        while True:
            value = predicate()
            if value:
                return value
            gevent.sleep(0.2)


def network_changed(driver):
    """Chromium aborts requests when network interfaces change (Docker adds and removes
    veth interfaces as containers come and go) and shows ERR_NETWORK_CHANGED."""
    return "ERR_NETWORK_CHANGED" in driver.page_source


def open_page(driver, url, attempts=5):
    """driver.get, again while Chromium reports a network change."""
    for _ in range(attempts):
        driver.get(url)
        if not network_changed(driver):
            return
        gevent.sleep(1)
    raise AssertionError("%s: network changed %d times in a row" % (url, attempts))


def submit(driver, find_button, reached, attempts=5):
    """Click the button `find_button()` returns until `reached()` says the server acted on
    it (its value is returned); a click lost to a network change is made again from the
    page it was on."""
    url = driver.current_url
    for _ in range(attempts):
        find_button().click()
        outcome = wait_for(lambda: reached() or ("lost" if network_changed(driver) else None),
                           "the form post to arrive", timeout=60)
        if outcome != "lost":
            return outcome
        open_page(driver, url)
    raise AssertionError("form post lost to network changes %d times" % attempts)
