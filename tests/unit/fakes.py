"""Small hand-written fakes for worker tests."""

import gevent

from agent import config
from agent.handlers import build_registry
from agent.operations import OperationSpec, by_service
from agent.protocol import envelope
from agent.protocol.fields import RequestSchema, StrictNumber, Uid
from agent.services import Services
from agent.worker.dispatcher import Dispatcher
from agent.worker.outbox import CallLog, Outbox


def make_config(tmp_path, **overrides):
    values = {"state_dir": str(tmp_path / "state"), "cert_dir": str(tmp_path / "certs")}
    values.update(overrides)
    return config.defaults().replace(**values)


class _SleepRequest(RequestSchema):
    service_uid = Uid(load_default="svc")
    seconds = StrictNumber(load_default=0.0)


def _sleep(ctx, request):
    """A cancellable test command, registered in-process only (docs/design.md, "Testing privileged operations")."""
    gevent.sleep(request["seconds"])
    return {"slept": request["seconds"]}


SLEEP_SPEC = OperationSpec("test", lambda r: f"sleep:{r['service_uid']}:{id(r)}", 60, 600, lock_key=by_service)


def test_registry():
    registry = build_registry()
    registry.add("test.sleep", _sleep, _SleepRequest(), operation=SLEEP_SPEC)
    registry.add("test.plain_sleep", _sleep, _SleepRequest())
    registry.add("test.boom", lambda ctx, r: 1 / 0, None)
    return registry


class Harness:
    """A dispatcher wired to an in-memory 'socket': ``direct`` and the outbox."""

    def __init__(self, tmp_path, **overrides):
        self.cfg = make_config(tmp_path, **overrides)
        self.direct = []
        self.outbox = Outbox(self.cfg.state_dir)
        self.calls = CallLog(self.cfg.state_dir)
        self.dispatcher = Dispatcher(self.cfg, test_registry(), lambda jobs: Services(self.cfg, jobs=jobs),
                                     self.outbox, self.calls,
                                     lambda frame, droppable=False: self.direct.append(frame))
        self.services = self.dispatcher.services

    def send(self, frame):
        self.dispatcher.handle(envelope.decode(envelope.encode(frame)))

    def call(self, call_id, event, data=None, **extra):
        frame = {"type": "call", "call_id": call_id, "event": event, **extra}
        if data is not None:
            frame["data"] = data
        self.send(frame)

    def responses(self):
        """Drain the outbox and the direct responses (inline commands); the response frames
        by call_id."""
        out = {}
        frames = [f for f in self.direct if f.get("type") == "response"]
        self.direct[:] = [f for f in self.direct if f.get("type") != "response"]
        while (head := self.outbox.peek()) is not None:
            frames.append(envelope.decode(head[1]).raw)
            self.outbox.ack(head[0])
        for frame in frames:
            if frame["type"] == "response":
                out.setdefault(frame["call_id"], []).append(frame["data"])
        return out

    def wait(self, call_ids, timeout=5):
        got = {}
        with gevent.Timeout(timeout):
            while not set(call_ids) <= set(got):
                for key, value in self.responses().items():
                    got.setdefault(key, []).extend(value)
                gevent.sleep(0.01)
        return got
