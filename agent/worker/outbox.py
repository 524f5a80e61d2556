"""Durable delivery: the outbox and the call log (docs/protocol.md, "Delivery").

The :class:`Outbox` keeps responses and status events in order until they
are written to the socket, bounded in count and bytes; when full it drops the
oldest non-terminal events (counted) and never a response or terminal event.
The :class:`CallLog` remembers running and finished ``call_id``s so a re-sent
call is never run twice.
"""

import collections
import os
import time

import gevent.event

from agent import log
from agent.protocol import envelope
from agent.worker.journal import Journal

_log = log.get("outbox")


COMPACT_MIN_LINES = 1000
COMPACT_RATIO = 4     # rewrite the journal once its dead lines exceed 4x the live ones


class Outbox:
    """Frames are stored encoded (strict UTF-8 JSON bytes, envelope.outbound): what is queued
    or journaled can always be written to the socket."""

    def __init__(self, state_dir, max_messages=10_000, max_bytes=64 * 1024**2):
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.dropped = 0
        self.bytes = 0
        self._entries = collections.OrderedDict()   # seq -> (bytes, droppable, key)
        self._keys = {}                              # key (call_id) -> seq
        self._seq = 0
        self.ready = gevent.event.Event()
        self.on_ready = None                         # the connected session's wake-up
        self._journal = Journal(os.path.join(state_dir, "outbox.journal"))
        self._replay()

    def _replay(self):
        for record in self._journal.load():
            try:
                self._replay_one(record)
            except (KeyError, TypeError, ValueError, envelope.ProtocolError) as exc:
                # never retried forever: an entry that cannot be sent is dropped for good
                _log.error("dropping an outbox journal entry that cannot be replayed: %s", str(exc)[:200])
        self._compact()
        if self._entries:
            _log.info("outbox holds %d messages from before the restart", len(self._entries))
            self.ready.set()

    def _replay_one(self, record):
        if "+" in record:
            seq, text, droppable, key = record["+"], record["f"], record["d"], record.get("k")
            if not isinstance(seq, int) or not isinstance(text, str) or not isinstance(key, (str, type(None))):
                raise ValueError("malformed entry")
            data = text.encode("utf-8")            # raises on a lone surrogate
            envelope.decode(data)                   # and must still be a frame
            self._store(seq, data, bool(droppable), key)
        else:
            seq = record["-"]
            if not isinstance(seq, int):
                raise ValueError("malformed removal")
            self._drop_entry(seq)
        self._seq = max(self._seq, seq)

    def __len__(self):
        return len(self._entries)

    def has_key(self, key):
        return key in self._keys

    def put(self, frame, key=None):
        """Queue ``frame`` (a dict); False when it was dropped (an event that cannot be
        encoded, or no room left for an event).

        ``key`` (a response's call_id) lets the dispatcher see that a reply is still queued.
        """
        fitted = envelope.outbound(frame)
        return fitted is not None and self.put_outbound(fitted, key)

    def put_outbound(self, fitted, key=None):
        """Queue an ``envelope.outbound`` pair ``(frame, bytes)``."""
        frame, text = fitted
        droppable = frame.get("type") == "event" and not envelope.is_terminal_event(frame)
        while self._over(len(text)):
            if not self._drop_oldest_droppable():
                if droppable:
                    self.dropped += 1
                    return False
                _log.error("outbox is full of responses; queueing beyond its bound")
                break
        self._seq += 1
        self._store(self._seq, text, droppable, key)
        self._journal.append({"+": self._seq, "f": text.decode("utf-8"), "d": droppable, "k": key})
        self.ready.set()
        if self.on_ready is not None:
            self.on_ready()
        return True

    def full(self):
        """True when no room is left even after dropping events (docs/protocol.md, "Delivery": refuse calls)."""
        undroppable = sum(1 for _, d, _ in self._entries.values() if not d)
        return undroppable >= self.max_messages

    def peek(self):
        """(seq, text) of the oldest entry, or None."""
        for seq, (text, _, _) in self._entries.items():
            return seq, text
        self.ready.clear()
        return None

    def head(self, count, max_bytes):
        """Up to ``count`` oldest entries (at least one if any) within ``max_bytes``."""
        found, size = [], 0
        for seq, (text, _, _) in self._entries.items():
            if found and (len(found) >= count or size + len(text) > max_bytes):
                break
            found.append((seq, text))
            size += len(text)
        return found

    def ack(self, seq):
        """The entry was written to the socket: forget it."""
        if self._drop_entry(seq):
            self._journal.append({"-": seq})
        if not self._entries:
            self.ready.clear()
        self._compact_if_dead()

    def flush(self):
        self._journal.flush()

    def close(self):
        self._journal.close()

    def _over(self, extra):
        return len(self._entries) + 1 > self.max_messages or self.bytes + extra > self.max_bytes

    def _drop_oldest_droppable(self):
        for seq, (_, droppable, _) in self._entries.items():
            if droppable:
                self._drop_entry(seq)
                self._journal.append({"-": seq})
                self.dropped += 1
                self._compact_if_dead()
                return True
        return False

    def _drop_entry(self, seq):
        entry = self._entries.pop(seq, None)
        if entry is not None:
            self.bytes -= len(entry[0])
            if entry[2] is not None:
                self._keys.pop(entry[2], None)
        return entry is not None

    def _store(self, seq, text, droppable, key):
        self._entries[seq] = (text, droppable, key)
        self.bytes += len(text)
        if key is not None:
            self._keys[key] = seq

    def _compact_if_dead(self):
        """Bound the journal whether or not the outbox ever empties (a long outage)."""
        dead = self._journal.lines - len(self._entries)
        if dead > COMPACT_MIN_LINES and dead > COMPACT_RATIO * len(self._entries):
            self._compact()

    def _compact(self):
        self._journal.rewrite([{"+": s, "f": t.decode("utf-8"), "d": d, "k": k}
                               for s, (t, d, k) in self._entries.items()])


class CallLog:
    """The last ``limit`` call outcomes for ``ttl`` seconds, plus running calls."""

    def __init__(self, state_dir, limit=1000, ttl=3600.0):
        self.limit = limit
        self.ttl = ttl
        self.running = {}                              # call_id -> started (wall time)
        self.done = collections.OrderedDict()          # call_id -> (finished, response frame)
        self._journal = Journal(os.path.join(state_dir, "calls.journal"))
        self.interrupted = self._replay()

    def _replay(self):
        for record in self._journal.load():
            try:
                call_id, state, when = record["c"], record["s"], float(record["t"])
                if not isinstance(call_id, str):
                    raise TypeError("call_id")
                if state == "run":
                    self.running[call_id] = when
                else:
                    self.running.pop(call_id, None)
                    self.done[call_id] = (when, dict(record["r"]))
            except (KeyError, TypeError, ValueError) as exc:
                _log.error("dropping a call log entry that cannot be replayed: %s", str(exc)[:200])
        interrupted = list(self.running)
        self.running.clear()
        self._expire()
        self._compact()
        return interrupted

    def start(self, call_id):
        self.running[call_id] = time.time()
        self._journal.append({"c": call_id, "s": "run", "t": self.running[call_id]})

    def finish(self, call_id, frame):
        self.running.pop(call_id, None)
        now = time.time()
        self.done[call_id] = (now, frame)
        self.done.move_to_end(call_id)
        self._journal.append({"c": call_id, "s": "done", "t": now, "r": frame})
        self._expire()
        if self._journal.lines > 3 * self.limit:
            self._compact()

    def answered(self, call_id):
        """The stored response frame of a finished call, or None."""
        self._expire()
        entry = self.done.get(call_id)
        return entry[1] if entry else None

    def flush(self):
        self._journal.flush()

    def close(self):
        self._journal.close()

    def _expire(self):
        horizon = time.time() - self.ttl
        while self.done and (len(self.done) > self.limit or next(iter(self.done.values()))[0] < horizon):
            self.done.popitem(last=False)

    def _compact(self):
        records = [{"c": c, "s": "run", "t": t} for c, t in self.running.items()]
        records += [{"c": c, "s": "done", "t": t, "r": r} for c, (t, r) in self.done.items()]
        self._journal.rewrite(records)
