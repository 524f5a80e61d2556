"""An agent run in-process through the real dispatcher, wired to an in-memory connection.

Integration tests drive commands with ``call()`` (it waits for the reply) and read every
event the agent pushed from ``events``; ``env_vars`` is what the control plane answers to
the agent's ``get_service_env_vars`` call.
"""

import itertools

import gevent

from agent.handlers import build_registry
from agent.protocol import envelope
from agent.services import EventSink, Services
from agent.worker.dispatcher import Dispatcher
from agent.worker.outbox import CallLog, Outbox


class InProcessAgent:
    def __init__(self, cfg, modules):
        self.cfg = cfg
        self.events = []
        self.server_calls = []
        self.env_vars = {}
        self.outbox = Outbox(cfg.state_dir)
        sink = EventSink(lambda event, data: self.events.append((event, data)))
        self.dispatcher = Dispatcher(cfg, build_registry(modules), lambda jobs: Services(cfg, sink, jobs=jobs), self.outbox,
                                     CallLog(cfg.state_dir), self._direct, self._call_server)
        self.services = self.dispatcher.services
        self._ids = itertools.count(1)
        self._direct_replies = {}      # replies written directly (agent.ping)

    def _direct(self, frame, droppable=False):
        if frame.get("type") == "event":
            self.events.append((frame["event"], frame["data"]))
        elif frame.get("type") == "response":
            self._direct_replies[frame["call_id"]] = frame["data"]

    def _call_server(self, event, data, timeout):
        self.server_calls.append((event, data))
        if event == "get_service_env_vars":
            return dict(self.env_vars)
        return {"error": "not configured in this test"}

    def _drain(self, replies):
        replies.update(self._direct_replies)
        self._direct_replies.clear()
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
