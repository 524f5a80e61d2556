"""Fixtures of the console tests: a dev server on port 0, a logged-out and a logged-in
browser-like HTTP client, and (tests/console/test_console_browser.py) a real worker process
against private Docker and git services, reused from tests/resilience/faults_support.py."""

import re

import pytest
import requests

from tests.devserver.devserver_client import TestAgent, enroll

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Client:
    """requests with the dev CA, no proxies, no automatic redirects."""

    def __init__(self, server):
        self.server = server
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.verify = server.ca_file

    def get(self, path, **kw):
        return self.http.get(self.server.url + path, allow_redirects=False, timeout=30, **kw)

    def post(self, path, data, **kw):
        return self.http.post(self.server.url + path, data=data, allow_redirects=False,
                              timeout=30, **kw)

    def csrf(self, path="/"):
        match = CSRF.search(self.get(path).text)
        assert match, "no CSRF token on " + path
        return match.group(1)

    def login(self):
        token = self.csrf("/")
        resp = self.post("/console/login", {"token": self.server.admin_token, "csrf": token})
        assert resp.status_code == 303, resp.text
        return resp


@pytest.fixture
def client(devserver):
    return Client(devserver)


@pytest.fixture
def logged_in(client):
    client.login()
    return client


@pytest.fixture
def hostile_agent(devserver, tmp_path):
    """A hand-written agent whose every string is an HTML injection attempt."""
    identity = enroll(devserver, str(tmp_path / "certs"))
    agent = TestAgent(devserver, identity)
    agent.authenticate()
    yield agent
    agent.close()
