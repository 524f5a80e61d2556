"""Live state of agents: current connection, pending calls, received frames, subscribers.

The state of one `server_uid` (`AgentState`) outlives its connections, so a call whose
answer arrives after a reconnect (through the agent's outbox) still resolves, and
duplicate responses are recognised across connections (delivery is at-least-once,
docs/protocol.md, "Delivery").
"""

import collections
import logging
import time
import uuid

import gevent
import gevent.event
import gevent.queue

from agent.devserver.ws import Closed

log = logging.getLogger(__name__)

MAX_FRAMES = 100_000
MAX_ANSWERED = 10_000
SUBSCRIBER_QUEUE = 10_000
UNCONFIGURED = {"success": False, "data": None, "error": "not configured"}
ANSWERABLE = ("get_service_env_vars", "get_github_repo")


class NotConnected(Exception):
    """The agent is unknown or has no authenticated connection."""


class CallTimeout(Exception):
    """The agent did not answer a call in time."""


def normalise_reply(frame):
    """The agent's reply object from a `response` frame (docs/commands.md, "Requests")."""
    data = frame.get("data")
    if not isinstance(data, dict):
        data = {}
    return {"success": bool(data.get("success")), "data": data.get("data"),
            "error": data.get("error") or "", "code": data.get("code") or ""}


def _send(st, frame):
    """Send on the agent's current connection; a dying one counts as not connected."""
    conn = st.conn
    if conn is None:
        raise NotConnected(st.server_uid)
    try:
        conn.send(frame)
    except Closed as e:
        raise NotConnected(st.server_uid) from e


class AgentState:
    def __init__(self, server_uid):
        self.server_uid = server_uid
        self.conn = None            # the authenticated connection (session.AgentConnection)
        self.version = None
        self.authenticated_at = None
        self.last_seen = None       # time of the last frame or disconnect (the console)
        self.hardware_info = None
        self.frames = collections.deque(maxlen=MAX_FRAMES)
        self.pending = {}           # call_id -> AsyncResult
        self.answered = collections.OrderedDict()   # call_id -> reply, bounded
        self.duplicate_responses = 0
        self.unexpected_responses = 0
        self.answers = {}           # event -> reply to the agent's own calls
        self.subscribers = set()    # gevent queues of SSE clients

    def summary(self):
        return {"server_uid": self.server_uid, "connected": self.conn is not None,
                "authenticated_at": self.authenticated_at, "version": self.version,
                "last_seen": self.last_seen,
                "hardware_info": self.hardware_info,
                "duplicate_responses": self.duplicate_responses,
                "unexpected_responses": self.unexpected_responses,
                "pending_calls": len(self.pending)}


class Hub:
    def __init__(self):
        self._agents = {}

    def state(self, server_uid):
        st = self._agents.get(server_uid)
        if st is None:
            st = self._agents[server_uid] = AgentState(server_uid)
        return st

    def known(self, server_uid):
        return self._agents.get(server_uid)

    def all_states(self):
        return list(self._agents.values())

    # Connections -------------------------------------------------------------------------

    def attach(self, server_uid, conn, version):
        """Make `conn` the agent's connection; an older one is closed (one per server_uid)."""
        st = self.state(server_uid)
        old, st.conn = st.conn, conn
        st.version = version
        st.authenticated_at = st.last_seen = time.time()
        if old is not None and old is not conn:
            log.info("agent %s reconnected; closing its previous connection", server_uid)
            old.close(1000, "replaced by a newer connection")
        self.publish(st, "connected", {"type": "connected", "data": {"server_uid": server_uid}})

    def detach(self, server_uid, conn):
        st = self.state(server_uid)
        if st.conn is conn:
            st.conn = None
            st.last_seen = time.time()
            self.publish(st, "disconnected",
                         {"type": "disconnected", "data": {"server_uid": server_uid}})

    def wait_connected(self, server_uid=None, timeout=10.0):
        """Block until `server_uid` (or any agent) is connected; returns its uid or None."""
        deadline = time.monotonic() + timeout
        while True:
            for st in self._agents.values():
                if st.conn is not None and server_uid in (None, st.server_uid):
                    return st.server_uid
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            gevent.sleep(min(left, 0.05))

    # Calls to the agent ------------------------------------------------------------------

    def call(self, server_uid, event, data=None, timeout=30.0, call_id=None):
        """Send a call and wait for its reply; raises NotConnected or CallTimeout."""
        st = self._agents.get(server_uid)
        if st is None or st.conn is None:
            raise NotConnected(server_uid)
        call_id = call_id or str(uuid.uuid4())
        # A caller re-sending an answered call_id wants a fresh answer (the agent replies
        # from its idempotency store), so it is no longer treated as a duplicate.
        st.answered.pop(call_id, None)
        result = st.pending.get(call_id)
        if result is None:
            result = st.pending[call_id] = gevent.event.AsyncResult()
        frame = {"type": "call", "call_id": call_id, "event": event,
                 "data": {} if data is None else data}
        try:
            _send(st, frame)
            return result.get(timeout=timeout)
        except gevent.Timeout as e:
            raise CallTimeout(call_id) from e
        finally:
            if st.pending.get(call_id) is result and not result.ready():
                # Keep waiting for a late answer? No: drop it, a late one counts as unexpected.
                del st.pending[call_id]

    def cancel(self, server_uid, call_id):
        st = self._agents.get(server_uid)
        if st is None or st.conn is None:
            raise NotConnected(server_uid)
        _send(st, {"type": "cancel", "data": {"call_id": call_id}})

    # Frames from the agent ---------------------------------------------------------------

    def on_frame(self, st, frame):
        """Record a frame from an authenticated agent and publish it to subscribers."""
        st.frames.append(frame)
        st.last_seen = time.time()
        kind = frame.get("type")
        if kind == "response":
            self._on_response(st, frame)
        name = frame.get("event") if kind == "event" else kind
        if kind == "event" and name == "register_hardware_info":
            st.hardware_info = frame.get("data")
        self.publish(st, str(name), frame)

    def _on_response(self, st, frame):
        call_id = frame.get("call_id")
        result = st.pending.pop(call_id, None) if isinstance(call_id, str) else None
        if result is not None:
            reply = normalise_reply(frame)
            st.answered[call_id] = reply
            while len(st.answered) > MAX_ANSWERED:
                st.answered.popitem(last=False)
            result.set(reply)
        elif call_id in st.answered:
            st.duplicate_responses += 1
            log.info("duplicate response for call %s from %s ignored", call_id, st.server_uid)
        else:
            st.unexpected_responses += 1
            log.warning("response for unknown call %r from %s", call_id, st.server_uid)

    def answer_for(self, st, event):
        """The server's reply to an agent -> server call (docs/commands.md, "Agent -> server calls")."""
        if event not in ANSWERABLE:
            return {"success": False, "data": None, "error": "unknown call"}
        return dict(st.answers.get(event, UNCONFIGURED))

    # Server-sent events ------------------------------------------------------------------

    def subscribe(self, server_uid):
        queue = gevent.queue.Queue(SUBSCRIBER_QUEUE)
        self.state(server_uid).subscribers.add(queue)
        return queue

    def unsubscribe(self, server_uid, queue):
        self.state(server_uid).subscribers.discard(queue)

    @staticmethod
    def publish(st, name, frame):
        for queue in list(st.subscribers):
            try:
                queue.put_nowait((name, frame))
            except gevent.queue.Full:
                log.warning("SSE subscriber of %s is too slow; event dropped", st.server_uid)
