"""Persistent state of the dev control plane: join tokens, enrolled agents, revocations.

Everything lives as small JSON files in the data directory (mode 0700), each written
atomically (temp file, fsync, rename, fsync of the directory) so a crash never leaves a
half-written file behind (docs/design.md, "Settings and files"). Join tokens are stored only as their SHA-256.
"""

import hashlib
import json
import os
import secrets
import threading
import time

from agent.fsutil import atomic_write  # noqa: F401 (re-exported for the server)

TOKENS_FILE = "tokens.json"
AGENTS_FILE = "agents.json"
REVOKED_FILE = "revoked.json"


class TokenError(Exception):
    """A join token was refused; the message is the wire error text."""


def ensure_private_dir(path):
    """Create `path` (and parents) and force mode 0700 on it."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


def write_json(path, obj):
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def read_json(path, default):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return default


def token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


class Store:
    """Tokens, agents and revocations, kept in memory and mirrored to disk on each change.

    A plain lock guards read-modify-write: under gevent nothing inside yields, and the lock
    also keeps the class correct if it is ever used from real threads.
    """

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self._lock = threading.Lock()
        self._tokens = read_json(self._path(TOKENS_FILE), {})
        self._agents = read_json(self._path(AGENTS_FILE), {})
        self._revoked = read_json(self._path(REVOKED_FILE), {"serials": []})

    def _path(self, name):
        return os.path.join(self.data_dir, name)

    # Join tokens -------------------------------------------------------------------------

    def create_token(self, ttl_s=3600):
        """Issue a one-time join token; returns (token, expires_at Unix seconds)."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        with self._lock:
            self._drop_stale_tokens(now)
            self._tokens[token_hash(token)] = {"created_at": now, "expires_at": now + ttl_s}
            write_json(self._path(TOKENS_FILE), self._tokens)
        return token, now + ttl_s

    def check_token(self, token):
        """Raise TokenError unless `token` is known and unexpired (does not consume it)."""
        entry = self._tokens.get(token_hash(token or ""))
        if entry is None:
            raise TokenError("Invalid or used token")
        if entry["expires_at"] <= time.time():
            raise TokenError("Token expired")

    def consume_token(self, token):
        """Atomically check and remove a join token; raises TokenError."""
        with self._lock:
            self.check_token(token)
            del self._tokens[token_hash(token)]
            write_json(self._path(TOKENS_FILE), self._tokens)

    def _drop_stale_tokens(self, now):
        # Expired tokens are kept for a day so that using one still says "Token expired".
        for key in [k for k, v in self._tokens.items() if v["expires_at"] < now - 86400]:
            del self._tokens[key]

    # Agents ------------------------------------------------------------------------------

    def record_certificate(self, server_uid, serial, not_after, fingerprint):
        """Remember a certificate issued to `server_uid` (enrollment or renewal)."""
        with self._lock:
            agent = self._agents.setdefault(
                server_uid, {"server_uid": server_uid, "enrolled_at": time.time(), "serials": []})
            agent.update(serial=serial, not_after=not_after, fingerprint=fingerprint,
                         updated_at=time.time())
            agent["serials"] = (agent["serials"] + [serial])[-20:]
            write_json(self._path(AGENTS_FILE), self._agents)

    def agent(self, server_uid):
        entry = self._agents.get(server_uid)
        return dict(entry) if entry else None

    def agents(self):
        return [dict(a) for a in self._agents.values()]

    # Revocation --------------------------------------------------------------------------

    def revoke(self, server_uid):
        """Revoke every certificate ever issued to `server_uid`; False if unknown."""
        with self._lock:
            agent = self._agents.get(server_uid)
            if agent is None:
                return False
            agent["revoked"] = True
            serials = set(self._revoked["serials"]) | set(agent["serials"])
            self._revoked["serials"] = sorted(serials)
            write_json(self._path(AGENTS_FILE), self._agents)
            write_json(self._path(REVOKED_FILE), self._revoked)
            return True

    def is_revoked(self, serial, server_uid=None):
        if serial in self._revoked["serials"]:
            return True
        agent = self._agents.get(server_uid) if server_uid else None
        return bool(agent and agent.get("revoked"))
