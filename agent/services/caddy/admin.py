"""Caddy's JSON admin API over its Unix socket (docs/commands.md, "Domains and the proxy").

The socket lives in ``STATE_DIR/caddy/run`` (docs/design.md, "Settings and files"; docs/commands.md, "Domains and the proxy"); it is never bound to TCP,
so nothing on ``pulseup-net`` can reach it. Socket paths are limited to 107 bytes
(unix(7)); a longer path is reached through ``/proc/self/fd/<dir fd>/<name>``.
"""

import http.client
import json
import os
import socket

from agent.errors import AgentError

_SUN_PATH_MAX = 107


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        dir_fd = None
        try:
            target = self._path
            if len(os.fsencode(target)) > _SUN_PATH_MAX:
                dir_fd = os.open(os.path.dirname(target), os.O_RDONLY | os.O_DIRECTORY)
                target = f"/proc/self/fd/{dir_fd}/{os.path.basename(target)}"
            sock.connect(target)
        except BaseException:
            sock.close()
            raise
        finally:
            if dir_fd is not None:
                os.close(dir_fd)
        self.sock = sock


class AdminClient:
    """Minimal client of the endpoints the agent uses: ``POST /load`` and ``GET /config/``."""

    def __init__(self, socket_path, timeout=30.0):
        self.socket_path = socket_path
        self.timeout = timeout

    def _request(self, method, path, body=None, timeout=None):
        conn = _UnixConnection(self.socket_path, timeout or self.timeout)
        # Caddy's admin endpoint on a Unix socket only allows an empty Host (origin check)
        headers = {"Host": ""}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise AgentError("unavailable", f"proxy admin API unreachable: {exc}") from exc
        finally:
            conn.close()

    def load(self, document):
        """Replace Caddy's whole configuration.

        Raises unavailable when the proxy cannot be reached, internal with Caddy's error
        text when it refuses the document (the previous config keeps serving).
        """
        body = json.dumps(document).encode()
        status, text = self._request("POST", "/load", body)
        if status != 200:
            raise AgentError("internal", f"internal error: proxy refused the configuration "
                             f"(HTTP {status}): {_error_text(text)}")

    def config(self, timeout=None):
        """The running configuration as a dict (None when Caddy has none); raises unavailable."""
        status, text = self._request("GET", "/config/", timeout=timeout)
        if status != 200:
            raise AgentError("unavailable", f"proxy admin API answered HTTP {status}")
        return json.loads(text or b"null")

    def ready(self, timeout=2.0):
        """True when the admin API answers."""
        try:
            self.config(timeout=timeout)
        except (AgentError, ValueError):
            return False
        return True


def _error_text(raw):
    try:
        return str(json.loads(raw).get("error", ""))[:2000]
    except (ValueError, AttributeError):
        return raw.decode("utf-8", "replace")[:2000]
