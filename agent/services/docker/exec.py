"""The one exec stream: a command in a container over Docker's raw API socket.

:class:`ExecStream` runs ``sh -c script`` in a container with stdout and stderr kept apart
(the 8-byte frame headers of Docker's attach protocol) and, when asked, stdin attached
through the same socket, so database dumps stream out and restores stream in without a
shell argument or a CLI of a particular version (two docker CLIs exist on some hosts).
"""

import contextlib
import socket
import struct
import time

from agent.errors import AgentError
from agent.services.docker.errors import translate
from agent.values import TruncatedFrame, read_exactly

READ_SIZE = 1 << 20
_HEADER = struct.Struct(">BxxxL")


def run(docker, container, script, timeout=60.0):
    """Run ``sh -c script``; (exit_code, stdout, stderr) as text, each capped at 1 MiB."""
    out, err = bytearray(), bytearray()
    with ExecStream(docker, container, script) as stream:
        for kind, data in stream.frames(timeout=timeout):
            (out if kind == 1 else err).extend(data[: 1 << 20])
        code = stream.exit_code()
    return code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def path_exists(api, container, path):
    """Whether ``path`` exists in the container (running or not); raises AgentError."""
    # HEAD /containers/{id}/archive answers with a stat header only (Engine API
    # "Get information about files in a container"); GET would stream the whole tree.
    with translate(f"stat {path}"):
        url = api._url("/containers/{0}/archive", container)
        response = api.head(url, params={"path": path})
        if response.status_code == 404:
            return False
        api._raise_for_status(response)
        return True


class ExecStream:
    """One ``docker exec`` with its raw API socket: read demultiplexed frames, write stdin."""

    def __init__(self, docker, container, script, stdin=False):
        self.docker = docker      # anything with the low-level ``api`` client (DockerService)
        with translate(f"exec in {container}"):
            self.exec_id = docker.api.exec_create(
                container, ["sh", "-c", script], stdout=True, stderr=True, stdin=stdin)["Id"]
            self.sock = docker.api.exec_start(self.exec_id, socket=True)
        # Read through the HTTP response's buffered reader: bytes that arrived together with
        # the 101 Upgrade headers already sit in its buffer, not in the raw socket.
        response = getattr(self.sock, "_response", None)
        self.reader = getattr(getattr(getattr(response, "raw", None), "_fp", None), "fp", None) or self.sock
        self.raw = getattr(self.sock, "_sock", self.sock)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def frames(self, timeout=None):
        """Yield (1 = stdout | 2 = stderr, bytes) until the command closes its output."""
        self.raw.settimeout(timeout)
        while True:
            header = self._read_exactly(_HEADER.size)
            if header is None:
                return
            kind, length = _HEADER.unpack(header)
            while length > 0:
                data = self._read1(min(length, READ_SIZE))
                if not data:
                    raise AgentError("unavailable", "docker exec stream ended in the middle of a frame")
                length -= len(data)
                yield kind, data

    def _read1(self, size):
        try:
            if hasattr(self.reader, "read1"):
                return self.reader.read1(size)
            return self.reader.read(size)
        except socket.timeout as exc:
            raise AgentError("deadline_exceeded", "docker exec produced no output in time") from exc
        except (OSError, ValueError) as exc:  # ValueError: read on a closed file (cancel)
            raise AgentError("unavailable", f"docker exec stream: {exc}") from exc

    def _read_exactly(self, size):
        try:
            return read_exactly(self._read1, size)
        except TruncatedFrame as exc:
            raise AgentError("unavailable", "docker exec stream ended inside a frame header") from exc

    def send(self, data):
        """Write to the command's stdin; raises AgentError when the command is gone."""
        try:
            self.raw.sendall(data)
        except OSError as exc:
            raise AgentError("command_failed", f"the restore command stopped reading its input: {exc}",
                             exit_code=self.exit_code()) from exc

    def close_stdin(self):
        """Half-close: the command sees end of input, its output keeps flowing."""
        with contextlib.suppress(OSError):
            self.raw.shutdown(socket.SHUT_WR)

    def exit_code(self, wait=10.0):
        """The command's exit status (waits briefly for Docker to record it)."""
        deadline = time.monotonic() + wait
        while True:
            with translate("exec inspect"):
                info = self.docker.api.exec_inspect(self.exec_id)
            if not info.get("Running") or time.monotonic() >= deadline:
                code = info.get("ExitCode")
                return -1 if code is None else code
            time.sleep(0.05)

    def close(self):
        for target in (self.reader, self.sock):
            with contextlib.suppress(Exception):
                target.close()
        with contextlib.suppress(Exception):
            self.raw.close()
