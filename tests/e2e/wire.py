"""The control plane's side of the end-to-end tests: the devserver's HTTP call API and its
server-sent event stream (docs/devserver.md "HTTP API"), nothing else.

:class:`Wire` sends calls with ``POST /api/agents/<uid>/calls`` and follows
``GET /api/agents/<uid>/events`` in a greenlet, keeping every frame the agent sent.
"""

import json
import time

import gevent
import requests

RFC3339 = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$"


class Wire:
    def __init__(self, devserver, uid):
        self.devserver, self.uid = devserver, uid
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.verify = devserver.ca_file
        self.http.headers["Authorization"] = "Bearer " + devserver.admin_token
        self.frames = []              # (sse event name, frame) in arrival order
        self._reader = None
        self._response = None

    # --- calls ---------------------------------------------------------------
    def call(self, event, data=None, timeout=60, call_id=None):
        """The agent's reply object {success, data, error, code}."""
        body = {"event": event, "timeout_s": timeout}
        if data is not None:
            body["data"] = data
        if call_id is not None:
            body["call_id"] = call_id
        resp = self.http.post(f"{self.devserver.url}/api/agents/{self.uid}/calls", json=body, timeout=timeout + 30)
        assert resp.status_code == 200, f"{event}: HTTP {resp.status_code} {resp.text[:2000]}"
        return resp.json()

    def ok(self, event, data=None, timeout=60):
        """The reply's data of a call that must succeed."""
        reply = self.call(event, data, timeout)
        assert reply["success"] is True, f"{event} failed: {reply}"
        assert reply["error"] == "" and reply["code"] == "", reply
        return reply["data"]

    def refused(self, event, data, code, field=None, timeout=60, contains=None):
        """The reply of a call that must fail with ``code`` (docs/commands.md, "Errors")."""
        reply = self.call(event, data, timeout)
        assert reply["success"] is False, f"{event} should have failed with {code}: {reply}"
        assert reply["code"] == code, reply
        assert isinstance(reply["error"], str) and reply["error"] and "\n" not in reply["error"], reply
        assert reply["data"]["code"] == code, reply
        if field is not None:
            assert reply["data"].get("field") == field, reply
        if contains is not None:
            assert contains in reply["error"], reply
        return reply

    def cancel(self, call_id):
        resp = self.http.post(f"{self.devserver.url}/api/agents/{self.uid}/cancel", json={"call_id": call_id},
                              timeout=30)
        assert resp.status_code == 200, resp.text

    # --- events --------------------------------------------------------------
    def follow(self):
        """Subscribe to the agent's frames; returns once the subscription is in place."""
        self._response = self.http.get(f"{self.devserver.url}/api/agents/{self.uid}/events", stream=True,
                                       timeout=(10, None))
        assert self._response.status_code == 200, self._response.text
        lines = self._response.iter_lines(decode_unicode=True)
        assert next(lines) == ": subscribed"
        self._reader = gevent.spawn(self._read, lines)
        return self

    def _read(self, lines):
        name = None
        try:
            for line in lines:
                if line.startswith("event: "):
                    name = line[len("event: "):]
                elif line.startswith("data: ") and name is not None:
                    self.frames.append((name, json.loads(line[len("data: "):])))
                    name = None
        except (requests.RequestException, OSError, ValueError):
            return

    def close(self):
        if self._reader is not None:
            self._reader.kill(block=True, timeout=5)
        if self._response is not None:
            self._response.close()
        self.http.close()

    def mark(self):
        """A position in the event stream: pass it to :meth:`events` as ``since``."""
        return len(self.frames)

    def events(self, name, since=0, where=None):
        """Data of the ``event`` frames named ``name`` received after ``since``."""
        found = [frame.get("data") or {} for sse, frame in self.frames[since:]
                 if sse == name and frame.get("type") == "event"]
        return [data for data in found if where is None or where(data)]

    def wait_event(self, name, where=None, since=0, timeout=120):
        """The first matching event frame's data (AssertionError after ``timeout``)."""
        return self.wait_events(name, where, since, timeout, count=1)[0]

    def wait_events(self, name, where=None, since=0, timeout=120, count=1):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name, since, where)
            if len(found) >= count:
                return found
            gevent.sleep(0.05)
        raise AssertionError(f"fewer than {count} {name} events within {timeout}s; last seen: "
                             f"{self.events(name, since)[-5:]}")

    def connections(self, since=0):
        """How many ``connected`` notices the stream carried after ``since``."""
        return sum(1 for sse, _ in self.frames[since:] if sse == "connected")
