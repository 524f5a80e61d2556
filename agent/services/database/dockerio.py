"""The database service's Docker access: the SDK client, exec streams.

Docker errors become AgentError through the one translator, ``agent.services.docker.translate``.
:class:`ExecStream` runs one command in a
container with stdout and stderr kept apart (the 8-byte stream headers of Docker's
attach protocol) and, when asked, stdin attached through the API socket, so dumps stream
out and restores stream in without a shell argument or a CLI of a particular version
(ENVIRONMENT.md: two docker CLIs exist here).
"""

import contextlib
import socket
import struct
import time

from agent.errors import AgentError
from agent.services.docker import NETWORK, ensure_network, inspect_or_none, translate
READ_SIZE = 1 << 20
_HEADER = struct.Struct(">BxxxL")




def is_port_bind_failure(error):
    """Whether an AgentError from starting a container is Docker failing to bind a port."""
    text = error.message.lower()
    return any(s in text for s in ("port is already allocated", "address already in use",
                                   "bind for", "programming external connectivity"))


class DockerAdapter:
    """Docker access for the database service.

    With ``docker_service`` (agent.services.docker.DockerService) its client and network
    helper are shared; without it a client of its own is made from ``cfg.docker_host``.
    """

    def __init__(self, cfg, docker_service=None):
        self.cfg = cfg
        self.docker_service = docker_service
        self._client = None

    @property
    def client(self):
        if self.docker_service is not None:
            return self.docker_service.client
        if self._client is None:
            import docker

            with translate("connect to docker"):
                self._client = docker.DockerClient(base_url=self.cfg.docker_host or None,
                                                   timeout=120)
        return self._client

    @property
    def api(self):
        return self.client.api

    def close(self):
        if self._client is not None:
            self._client.close()
            self._client = None

    def inspect_container(self, name):
        """Container inspect dict, or None when absent; raises AgentError otherwise."""
        return inspect_or_none(self.api, name)

    def ensure_network(self):
        """Create the ``pulseup-net`` bridge when missing; raises AgentError."""
        ensure_network(self.client, NETWORK)

    def path_exists(self, container, path):
        """Whether ``path`` exists in the container (running or not); raises AgentError."""
        # HEAD /containers/{id}/archive answers with a stat header only (Engine API
        # "Get information about files in a container"); GET would stream the whole tree.
        with translate(f"stat {path}"):
            url = self.api._url("/containers/{0}/archive", container)
            response = self.api.head(url, params={"path": path})
            if response.status_code == 404:
                return False
            self.api._raise_for_status(response)
            return True

    def run(self, container, script, timeout=60.0):
        """Run ``sh -c script``; (exit_code, stdout, stderr) as text. For short commands."""
        out, err = bytearray(), bytearray()
        with ExecStream(self, container, script) as stream:
            for kind, data in stream.frames(timeout=timeout):
                (out if kind == 1 else err).extend(data[: 1 << 20])
            code = stream.exit_code()
        return code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


class ExecStream:
    """One ``docker exec`` with its raw API socket: read demultiplexed frames, write stdin."""

    def __init__(self, adapter, container, script, stdin=False):
        self.adapter = adapter
        with translate(f"exec in {container}"):
            self.exec_id = adapter.api.exec_create(
                container, ["sh", "-c", script], stdout=True, stderr=True, stdin=stdin)["Id"]
            self.sock = adapter.api.exec_start(self.exec_id, socket=True)
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
        data = b""
        while len(data) < size:
            part = self._read1(size - len(data))
            if not part:
                if data:
                    raise AgentError("unavailable", "docker exec stream ended inside a frame header")
                return None
            data += part
        return data

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
                info = self.adapter.api.exec_inspect(self.exec_id)
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
