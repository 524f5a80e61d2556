"""Helpers of the proxy + deploy end-to-end tests: an agent that runs deploy, domain and
lifecycle commands through the real dispatcher, and HTTP(S) requests to its Caddy.

The agent pattern follows tests/integration/deploy/conftest.py, the request helpers
tests/integration/proxy/conftest.py.
"""
import itertools
import socket
import ssl

import gevent
import requests

from agent.handlers import build_registry
from agent.protocol import envelope
from agent.services import Services
from agent.services.caddy.tls import local_root_path
from agent.worker.dispatcher import Dispatcher
from agent.worker.outbox import CallLog, Outbox

MODULES = ("agent.handlers.lifecycle", "agent.handlers.deploy", "agent.handlers.domains")
HTTP = requests.Session()
HTTP.trust_env = False       # loopback only: ignore proxy settings of the environment


class Agent:
    """A dispatcher wired to an in-memory connection: ``call()`` waits for the reply, every
    event lands in ``events``; ``env_vars`` answers the agent's get_service_env_vars call."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.events = []
        self.env_vars = {}
        self.outbox = Outbox(cfg.state_dir)
        self.services = Services(cfg)
        self.dispatcher = Dispatcher(cfg, build_registry(MODULES), self.services, self.outbox,
                                     CallLog(cfg.state_dir), self._direct, self._call_server)
        self.services.events.target = lambda event, data, durable: self.events.append((event, data))
        self._ids = itertools.count(1)

    def _direct(self, frame, droppable=False):
        if frame.get("type") == "event":
            self.events.append((frame["event"], frame["data"]))

    def _call_server(self, event, data, timeout):
        if event == "get_service_env_vars":
            return dict(self.env_vars)
        return {"error": "not configured in this test"}

    def _drain(self, replies):
        while (head := self.outbox.peek()) is not None:
            frame = envelope.decode(head[1]).raw
            self.outbox.ack(head[0])
            if frame["type"] == "response":
                replies[frame["call_id"]] = frame["data"]
            else:
                self.events.append((frame["event"], frame["data"]))

    def call(self, event, data, timeout=180):
        """The reply's data object ({success, data, error, code})."""
        call_id = f"c-{next(self._ids)}"
        replies = {}
        self.dispatcher.handle(envelope.decode(envelope.encode(
            {"type": "call", "call_id": call_id, "event": event, "data": data})))
        with gevent.Timeout(timeout):
            while call_id not in replies:
                self._drain(replies)
                gevent.sleep(0.02)
        return replies[call_id]

    def events_named(self, name):
        self._drain({})
        return [data for event, data in self.events if event == name]

    def close(self):
        self.services.close()


def http_get(cfg, host, path="/", timeout=5.0):
    """(status, body) of a plain HTTP request with ``Host`` to the proxy's published port."""
    response = HTTP.get(f"http://127.0.0.1:{cfg.caddy_http_port}{path}", headers={"Host": host},
                        timeout=timeout, allow_redirects=False)
    return response.status_code, response.text


def https_get(cfg, host, path="/", timeout=5.0):
    """(status line, body) over TLS with SNI ``host``, verified against Caddy's local root."""
    context = ssl.create_default_context(cafile=local_root_path(f"{cfg.state_dir}/caddy/data"))
    with socket.create_connection(("127.0.0.1", cfg.caddy_https_port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body.decode()


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
    connection error is a failure."""

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
                status, body = http_get(self.cfg, self.host)
                (self.seen if status == 200 else self.failures).append(body.strip() or status)
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
            gevent.sleep(0.02)
