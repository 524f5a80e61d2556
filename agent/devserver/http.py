"""A small HTTP/1.1 server loop over one (TLS) socket, built on h11.

Why not gevent.pywsgi: the dev server needs the TLS peer certificate per request, a
WebSocket upgrade on the same port and streamed request/response bodies (uploads, SSE);
h11 (already a dependency of wsproto) gives all three with little code.
"""

import email.utils
import json
import logging
import urllib.parse

import h11

log = logging.getLogger(__name__)

RECV_SIZE = 65536
MAX_HEADER_BYTES = 64 * 1024
MAX_JSON_BODY = 4 * 1024 * 1024
REASONS = {200: "OK", 201: "Created", 303: "See Other", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           413: "Payload Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Entity",
           500: "Internal Server Error", 502: "Bad Gateway", 504: "Gateway Timeout"}


class HttpError(Exception):
    """Raised by handlers: answered as `{"success": false, "error": message}`."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class Response:
    """A complete body (`body` bytes) or a stream (`stream`, an iterable of bytes)."""

    def __init__(self, status=200, body=b"", content_type="application/json", stream=None,
                 headers=()):
        self.status = status
        self.body = body
        self.stream = stream
        self.headers = [("content-type", content_type)] + list(headers)


def match_route(routes, req):
    """The first row `(method, pattern, ...)` of `routes` whose compiled `pattern` matches
    `req.path` and whose method is `req.method`; sets `req.params` to the named groups.
    Raises HttpError 405 when only another method has the path, else 404."""
    allowed = False
    for row in routes:
        match = row[1].match(req.path)
        if not match:
            continue
        allowed = True
        if row[0] == req.method:
            req.params = match.groupdict()
            return row
    if allowed:
        raise HttpError(405, "method not allowed")
    raise HttpError(404, "not found")


def json_response(obj, status=200):
    return Response(status, json.dumps(obj).encode())


def error_response(status, message):
    return json_response({"success": False, "error": message}, status)


class Request:
    """One parsed request; the body is read lazily from the connection."""

    def __init__(self, conn, event, peer_cert_der):
        self._conn = conn
        target = event.target.decode("latin-1")
        parsed = urllib.parse.urlsplit(target)
        self.method = event.method.decode("ascii").upper()
        self.path = parsed.path
        self.query = dict(urllib.parse.parse_qsl(parsed.query))
        self.raw_headers = list(event.headers)
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
        self.peer_cert_der = peer_cert_der
        self.params = {}

    def iter_body(self):
        """Yield the request body in chunks as it arrives (constant memory)."""
        return self._conn.iter_body()

    def read_body(self, limit=MAX_JSON_BODY):
        chunks, size = [], 0
        for chunk in self.iter_body():
            size += len(chunk)
            if size > limit:
                raise HttpError(413, "request body too large")
            chunks.append(chunk)
        return b"".join(chunks)

    def json(self):
        """The body as a JSON object ({} when empty); raises HttpError(400)."""
        body = self.read_body()
        if not body.strip():
            return {}
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError) as e:
            raise HttpError(400, "invalid JSON body") from e
        if not isinstance(obj, dict):
            raise HttpError(400, "JSON body must be an object")
        return obj


def parse_cgi_output(output):
    """(status, headers, body) for a WSGI answer from a CGI program's output (RFC 3875
    section 6: header lines, a blank line, the body; no Status header means 200). Output
    without the blank line (none at all, or a crash) is a 500."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, body = output.partition(separator)
        if found:
            break
    else:
        return "500 Internal Server Error", [("Content-Type", "text/plain")], b"CGI program failed\n"
    status, headers = "200 OK", []
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = value.strip()
        elif name:
            headers.append((name.strip(), value.strip()))
    return status, headers, body


def file_chunks(path, size=65536):
    """A file's bytes in chunks, for a streamed response body."""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(size)
            if not chunk:
                return
            yield chunk


def queued_or_keepalive(queue, keepalive):
    """The items of ``queue`` as they arrive, and None after every ``keepalive`` seconds of
    silence (an SSE stream then writes a comment line, so proxies keep it open)."""
    import gevent.queue

    while True:
        try:
            yield queue.get(timeout=keepalive)
        except gevent.queue.Empty:
            yield None


class HttpConnection:
    """Serves requests on `sock` until it closes; `upgrade(req, sock, trailing)` takes over
    the socket for a WebSocket upgrade, `handle(req) -> Response` answers everything else."""

    def __init__(self, sock, handle, upgrade):
        self.sock = sock
        self._handle = handle
        self._upgrade = upgrade
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        try:
            self._peer_der = sock.getpeercert(binary_form=True)
        except (ValueError, AttributeError):
            self._peer_der = None

    def _next_event(self):
        while True:
            event = self._h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            self._h11.receive_data(self.sock.recv(RECV_SIZE))

    def iter_body(self):
        while True:
            event = self._next_event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)) \
                    or event is h11.PAUSED:
                return

    def serve(self):
        try:
            while self._serve_one():
                self._h11.start_next_cycle()
        except (h11.RemoteProtocolError, OSError) as e:
            log.debug("http connection ended: %s", e)

    def _serve_one(self):
        """Handle one request; True if the connection can carry another one."""
        event = self._next_event()
        if not isinstance(event, h11.Request):
            return False
        req = Request(self, event, self._peer_der)
        if self._is_websocket(req):
            for _ in self.iter_body():   # h11 pauses after the upgrade request
                pass
            trailing, _closed = self._h11.trailing_data
            self._upgrade(req, self.sock, trailing)
            return False
        response = self._respond(req)
        self._send_response(response)
        if self._h11.their_state is h11.SEND_BODY and not self._drain(MAX_JSON_BODY):
            return False
        return self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE

    def _drain(self, limit):
        """Read and drop an unread body (closing with unread bytes could reset the socket
        before the client reads the answer); False if it is larger than `limit`."""
        size = 0
        for chunk in self.iter_body():
            size += len(chunk)
            if size > limit:
                return False
        return True

    @staticmethod
    def _is_websocket(req):
        return (req.method == "GET" and "websocket" in req.headers.get("upgrade", "").lower())

    def _respond(self, req):
        try:
            return self._handle(req)
        except HttpError as e:
            return error_response(e.status, e.message)
        except Exception:  # an entry point: one bad request must not kill the server
            log.exception("error handling %s %s", req.method, req.path)
            return error_response(500, "internal server error")

    def _send_response(self, response):
        headers = list(response.headers)
        # RFC 9110 8.6.1: an origin server with a clock sends Date (`pulseup-agent doctor` reads it)
        headers.append(("date", email.utils.formatdate(usegmt=True)))
        if response.stream is None:
            headers.append(("content-length", str(len(response.body))))
        reason = REASONS.get(response.status, "Status").encode()
        head = self._h11.send(h11.Response(status_code=response.status, headers=headers,
                                           reason=reason))
        if response.stream is None:
            # One write for head and body: separate small writes meet Nagle + delayed ACK
            # and cost ~40 ms per request.
            body = self._h11.send(h11.Data(data=response.body)) if response.body else b""
            self.sock.sendall(head + body + self._h11.send(h11.EndOfMessage()))
            return
        self.sock.sendall(head)
        self._send_stream(response.stream)
        self._send(h11.EndOfMessage())

    def _send_stream(self, stream):
        try:
            for chunk in stream:
                self._send(h11.Data(data=chunk))
        finally:
            close = getattr(stream, "close", None)
            if close:
                close()

    def _send(self, event):
        data = self._h11.send(event)
        if data:
            self.sock.sendall(data)
