"""Helpers of the proxy + deploy end-to-end tests: an agent that runs deploy, domain and
lifecycle commands through the real dispatcher, and HTTP(S) requests to its Caddy.

The agent pattern follows tests/integration/deploy/conftest.py; HTTPS requests are
tests/integration/proxy/proxysupport.py's.
"""
import gevent
import requests

from tests.integration.harness.agentkit import InProcessAgent
from tests.integration.proxy.proxysupport import https_get  # noqa: F401 (the tests import it from here)

MODULES = ("agent.handlers.lifecycle", "agent.handlers.deploy", "agent.handlers.domains")
HTTP = requests.Session()
HTTP.trust_env = False       # loopback only: ignore proxy settings of the environment


def Agent(cfg):
    """The in-process agent of tests/integration/harness/agentkit.py with these commands."""
    return InProcessAgent(cfg, MODULES)


def http_get(cfg, host, path="/", timeout=5.0, fresh_connection=False):
    """(status, body) of a plain HTTP request with ``Host`` to the proxy's published port."""
    headers = {"Host": host, **({"Connection": "close"} if fresh_connection else {})}
    response = HTTP.get(f"http://127.0.0.1:{cfg.caddy_http_port}{path}", headers=headers,
                        timeout=timeout, allow_redirects=False)
    return response.status_code, response.text


def body_of(cfg, host):
    """The stripped body of a 200 answer for ``host``, else the status code."""
    status, body = http_get(cfg, host)
    return body.strip() if status == 200 else status


def wait_for_body(cfg, host, expected, timeout=30.0):
    last = [None]

    def check():
        last[0] = body_of(cfg, host)
        return last[0] == expected
    deadline = gevent.get_hub().loop.now() + timeout
    while gevent.get_hub().loop.now() < deadline:
        try:
            if check():
                return
        except requests.RequestException as exc:
            last[0] = repr(exc)
        gevent.sleep(0.1)
    raise AssertionError(f"{host} did not serve {expected!r} within {timeout:g}s; last answer {last[0]!r}")


class LoadLoop:
    """Requests through the proxy in a greenlet until stopped; every non-200 answer or
    connection error is a failure.

    Each request uses a new connection. Every change of Caddy's configuration (the traffic
    switch of a deploy is one) replaces its HTTP servers, and Go's graceful shutdown closes
    the old server's *idle* keep-alive connections at once: a client that sends its next
    request on such a connection at that instant gets "Remote end closed connection without
    response". That is the keep-alive race RFC 9112 section 9.3.1 lets clients retry, not
    downtime; counting it made this test fail about once in ten runs under load. New
    connections measure what matters: whether the site answers.
    """

    def __init__(self, cfg, host):
        self.cfg, self.host = cfg, host
        self.seen, self.failures = [], []
        self._running = True
        self._greenlet = None

    def __enter__(self):
        self._greenlet = gevent.spawn(self._run)
        return self

    def __exit__(self, *exc):
        self._running = False
        self._greenlet.join(timeout=10)

    def _run(self):
        while self._running:
            try:
                status, body = http_get(self.cfg, self.host, fresh_connection=True)
                (self.seen if status == 200 else self.failures).append(body.strip() or status)
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
            gevent.sleep(0.02)
