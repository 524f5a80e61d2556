"""Append-only JSON-lines journals with batched fsync, and atomic file writes.

Used by the outbox and the call log (docs/protocol.md, "Delivery": fsynced on enqueue, batched,
at most 50 ms). A torn last line after a crash is ignored on load.
"""

import json
import os

import gevent

from agent import log
from agent.fsutil import atomic_write

_log = log.get("journal")
FSYNC_BATCH = 0.05


class Journal:
    def __init__(self, path):
        self.path = path
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        self._handle = None
        self._dirty = False
        self._flusher = None
        self.lines = 0

    def load(self):
        """Every intact record in the file, oldest first."""
        records = []
        try:
            with open(self.path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        records.append(json.loads(line))
                    except ValueError:
                        _log.warning("ignoring a torn journal line in %s", self.path)
        except FileNotFoundError:
            pass
        self.lines = len(records)
        return records

    def append(self, record):
        handle = self._open()
        handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.lines += 1
        self._dirty = True
        if self._flusher is None:
            self._flusher = gevent.spawn_later(FSYNC_BATCH, self.flush)

    def flush(self):
        self._flusher = None
        if self._handle is not None and self._dirty:
            self._dirty = False
            self._handle.flush()
            # fsync blocks; keep it off the hub
            gevent.get_hub().threadpool.apply(os.fsync, (self._handle.fileno(),))

    def rewrite(self, records):
        """Replace the journal by ``records`` (compaction), atomically."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        atomic_write(self.path, text.encode("utf-8"))
        self.lines = len(records)
        self._dirty = False

    def close(self):
        if self._flusher is not None:
            self._flusher.kill(block=False)
            self._flusher = None
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None

    def _open(self):
        if self._handle is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._handle = os.fdopen(fd, "a", encoding="utf-8")
        return self._handle
