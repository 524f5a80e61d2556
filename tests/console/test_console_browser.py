"""The console in a real browser (issue 21): log in, see the agent, open its page, watch a
chart update, deploy an app from git and watch its log lines arrive, see the event stream.

The agent is a real worker process (`python -m agent worker` as nobody) against a private
dockerd and a token git server (tests/resilience/faults_support.py). With
CONSOLE_SCREENSHOTS=<dir> the main pages are saved there as PNG
(scripts/console-screenshots.py).
"""

import base64
import os

import pytest

from tests.console.browser import (network_changed, open_page, start_browser, stop_browser,
                                   submit, wait_for)
from tests.resilience import faults_support as fs
from tests.resilience.faults_support import fault_env, home  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS")


@pytest.fixture
def worker(home, devserver):
    worker = fs.WorkerProcess(home, devserver)
    yield worker
    worker.stop()


@pytest.fixture
def browser():
    driver = start_browser()
    yield driver
    stop_browser(driver)


# The app logs a line at start and one per second, so its live log has something to show.
APP_DOCKERFILE = ("FROM pulseup-test/appbase:latest\nCOPY index.html /www/index.html\nEXPOSE 8080\n"
                  "CMD [\"sh\", \"-c\", \"trap 'exit 0' TERM; echo console-app-started; "
                  "(while true; do echo tick; sleep 1; done) & httpd -f -p 8080 -h /www & wait\"]\n")


def shot(driver, name):
    """A full-page PNG (DevTools Page.captureScreenshot) when CONSOLE_SCREENSHOTS is set."""
    if not SHOTS:
        return
    os.makedirs(SHOTS, exist_ok=True)
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 2400),
            "scale": 1}
    data = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True, "clip": clip})["data"]
    with open(os.path.join(SHOTS, name + ".png"), "wb") as f:
        f.write(base64.b64decode(data))


def log_in(driver, server):
    from selenium.webdriver.common.by import By

    open_page(driver, server.url + "/")
    shot(driver, "console-login")
    driver.find_element(By.NAME, "token").send_keys("wrong")
    driver.find_element(By.CSS_SELECTOR, "form button").click()
    assert "Wrong admin token" in wait_for(lambda: driver.find_element(By.TAG_NAME, "body").text
                                           if "Wrong" in driver.page_source else None, "refusal")
    driver.find_element(By.NAME, "token").send_keys(server.admin_token)
    driver.find_element(By.CSS_SELECTOR, "form button").click()
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "table.agents"), "the agents page")
    cookie = driver.get_cookie("pulseup_console")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert cookie["value"] != server.admin_token


def polyline(driver, chart_id):
    """The points of a chart's line, read in one script (the chart redraws its children)."""
    return driver.execute_script(
        "var p = document.querySelector('#' + arguments[0] + ' polyline');"
        "return p ? p.getAttribute('points') : null;", chart_id)


def watch_charts(driver, uid):
    from selenium.webdriver.common.by import By

    row = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, 'tr[data-agent="%s"]' % uid),
                   "the agent's row")[0]
    assert "connected" in row.text
    shot(driver, "console-agents")
    row.find_element(By.LINK_TEXT, uid).click()
    cpu = wait_for(lambda: driver.find_elements(By.ID, "chart-cpu"), "the CPU chart")[0]
    wait_for(lambda: int(cpu.get_attribute("data-points") or 0) >= 2, "two CPU samples")
    first = polyline(driver, "chart-cpu")
    wait_for(lambda: polyline(driver, "chart-cpu") != first, "the CPU chart to move")
    net = driver.find_element(By.ID, "chart-network")
    wait_for(lambda: int(net.get_attribute("data-points") or 0) >= 2, "network samples")
    value = driver.find_element(By.ID, "value-memory").text
    assert "%" in value and "GiB" in value


def text_of(driver, element_id):
    """The text of an element looked up now (pages may be reloaded after a network change)."""
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.ID, element_id)
    return found[0].text if found else ""


def deploy(driver, env, server, uid, service_uid, screenshot=None):
    """Fill the deploy form, submit it, and follow the deployment page to its end."""
    from selenium.webdriver.common.by import By

    open_page(driver, "%s/console/agents/%s/deploy" % (server.url, uid))
    fields = {"service_uid": service_uid, "git_url": "%s/%s.git" % (env.git.base_url, service_uid),
              "access_token": env.git.token, "port": "8080", "env": "GREETING=hello"}
    for name, value in fields.items():
        element = driver.find_element(By.NAME, name)
        element.clear()
        element.send_keys(value)
    before = len(server.console.jobs.for_agent(uid))
    job = submit(driver, lambda: driver.find_element(By.CSS_SELECTOR, "button.primary"),
                 lambda: server.console.jobs.for_agent(uid)[0]
                 if len(server.console.jobs.for_agent(uid)) > before else None)
    page = "%s/console/agents/%s/deployments/%s" % (server.url, uid, job.deployment_uid)
    if driver.current_url != page:
        open_page(driver, page)
    wait_for(lambda: len(text_of(driver, "deploy-log").splitlines()) >= 3,
             "deployment log lines", timeout=120)
    wait_for(lambda: text_of(driver, "deploy-status") in ("completed", "failed")
             or network_changed(driver) and open_page(driver, page), "the final status",
             timeout=300)
    if screenshot:
        shot(driver, screenshot)
    assert text_of(driver, "deploy-status") == "completed", text_of(driver, "deploy-message")
    wait_for(lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-done"),
             "the console's own job to end")
    return text_of(driver, "deploy-log")


def serves(env, service_uid, body):
    """True when the service's running container answers ``body``."""
    for container in env.client.containers.list(filters={"label": "pulseup.service_uid=%s"
                                                         % service_uid}):
        try:
            if fs.app_answer(env, container.name, timeout=2) == body:
                return True
        except Exception:  # noqa: BLE001 - starting: no address or not listening yet
            pass
    return False


def roll_back(driver, env, server, uid, service_uid):
    """Deploy a second version, then roll back to the first from the service page."""
    from selenium.webdriver.common.by import By

    env.git.commit(service_uid, {"index.html": "version two\n"})
    deploy(driver, env, server, uid, service_uid)
    wait_for(lambda: serves(env, service_uid, "version two\n"), "version two to serve")
    open_page(driver, "%s/console/agents/%s/services/%s" % (server.url, uid, service_uid))
    buttons = "//button[text()='Roll back to this']"
    assert len(driver.find_elements(By.XPATH, buttons)) == 2
    job = submit(driver, lambda: driver.find_elements(By.XPATH, buttons)[-1],   # version one
                 lambda: [j for j in server.console.jobs.for_agent(uid) if j.kind == "rollback"])[0]
    wait_for(lambda: job.state != "running", "the rollback", timeout=300)
    assert job.state == "succeeded", job.error
    wait_for(lambda: serves(env, service_uid, "hello\n"), "version one to serve again")


def agent_overview(driver, server, uid, service_uid):
    """The agent page lists the service running and a monitoring sample of its container."""
    from selenium.webdriver.common.by import By

    open_page(driver, "%s/console/agents/%s" % (server.url, uid))
    row = 'tr[data-service="%s"]' % service_uid
    wait_for(lambda: "running" in " ".join(r.text for r in driver.find_elements(
        By.CSS_SELECTOR, row)), "the service to show running")
    wait_for(lambda: service_uid in text_of(driver, "containers"),
             "a monitoring sample of the app container", timeout=120)
    points = 20 if SHOTS else 3
    wait_for(lambda: int(driver.find_element(By.ID, "chart-cpu").get_attribute("data-points")
                         or 0) >= points, "chart samples", timeout=120)
    shot(driver, "console-agent")


def live_logs(driver, server, uid, service_uid):
    """The service page shows the container's earlier lines, then new ones as they come."""
    open_page(driver, "%s/console/agents/%s/services/%s" % (server.url, uid, service_uid))
    wait_for(lambda: "console-app-started" in text_of(driver, "service-logs"),
             "the container's earlier lines")
    ticks = text_of(driver, "service-logs").count("tick")
    wait_for(lambda: text_of(driver, "service-logs").count("tick") > ticks + 1,
             "live container log lines")
    assert "completed" in text_of(driver, "deployments")
    shot(driver, "console-service")


def filter_events(driver, server, uid):
    from selenium.webdriver.common.by import By

    open_page(driver, "%s/console/agents/%s/events" % (server.url, uid))
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#events tbody tr"), "replayed events")
    driver.find_element(By.ID, "event-filter").send_keys("update_deployment_status")
    visible = [r for r in driver.find_elements(By.CSS_SELECTOR, "#events tbody tr")
               if r.is_displayed()]
    assert visible and all("update_deployment_status" in r.text for r in visible)
    shot(driver, "console-events")


def test_log_in_watch_charts_and_deploy(fault_env, worker, devserver, browser):
    env, service_uid = fault_env, fs.unique("console")
    env.image("app")
    env.git.add_repo(service_uid, {"Dockerfile": APP_DOCKERFILE, "index.html": "hello\n"})
    worker.start()
    try:
        log_in(browser, devserver)
        watch_charts(browser, worker.uid)
        text = deploy(browser, env, devserver, worker.uid, service_uid, "console-deploy")
        assert "Dockerfile" in text or "docker" in text.lower(), text[:2000]
        assert env.git.token not in browser.page_source
        agent_overview(browser, devserver, worker.uid, service_uid)
        live_logs(browser, devserver, worker.uid, service_uid)
        roll_back(browser, env, devserver, worker.uid, service_uid)
        filter_events(browser, devserver, worker.uid)
    finally:
        worker.stop()
        fs.remove_service(env, service_uid)
