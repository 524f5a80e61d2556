"""Doctor checks of the control plane: DNS, TCP and TLS of WEBSOCKET_URL and the HTTP API,
and this host's clock against the API's ``Date`` header.

TLS is verified the way the worker verifies it: against ``CERT_DIR/ca.crt`` plus
``SERVER_CA_FILE`` (``ENROLL_CA_FILE`` before enrollment, the system CAs when none is set),
with the host name checked. No client certificate is presented: the doctor must not open a
second session in the name of a running worker.
"""

import email.utils
import os
import socket
import ssl
import time
from urllib.parse import urlsplit

from agent.doctor.report import failed, passed, skipped

TIMEOUT = 5.0
MAX_HEAD = 64 * 1024
MAX_SKEW = 30.0     # issued certificates start 60 s in the past (agent/devserver/ca.py)
SECURE = {"wss": 443, "https": 443}
PLAIN = {"ws": 80, "http": 80}


class Unreachable(Exception):
    """(detail, hint) of the step that failed."""

    def __init__(self, detail, hint):
        super().__init__(detail)
        self.detail, self.hint = detail, hint


def trust(cfg):
    """(SSLContext, [CA files loaded]); raises Unreachable when a configured file cannot load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    ca = os.path.join(cfg.cert_dir, "ca.crt")
    files = [ca] if os.access(ca, os.R_OK) else [cfg.enroll_ca_file] if cfg.enroll_ca_file else []
    if cfg.server_ca_file:
        files.append(cfg.server_ca_file)
    for path in files:
        try:
            context.load_verify_locations(cafile=path)
        except (OSError, ssl.SSLError) as exc:
            raise Unreachable(f"cannot load the CA file {path}: {exc}",
                              "fix the file or the setting that names it") from None
    if not files:
        context.load_default_certs()
    return context, files or ["the system CAs"]


def api_url(cfg):
    """API_BASE_URL, else derived from WEBSOCKET_URL (agent/worker/identity.py api_base)."""
    from agent.worker.identity import api_base
    return api_base(cfg)


def probe(cfg, url, fetch_head=False):
    """Resolve, connect and (for wss/https) verify TLS; (detail, head lines or None)."""
    parts = urlsplit(url)
    port = parts.port or SECURE.get(parts.scheme) or PLAIN[parts.scheme]
    addresses = _resolve(parts.hostname, port)
    sock = _connect(parts.hostname, addresses, port)
    try:
        detail = f"{parts.hostname} resolves to {', '.join(a[4][0] for a in addresses[:3])}; TCP port {port} open"
        if parts.scheme in SECURE:
            sock, shown = _handshake(cfg, sock, parts.hostname)
            detail += f"; {shown}"
        head = _get_head(sock, parts) if fetch_head else None
        return detail, head
    finally:
        sock.close()


def _resolve(host, port):
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Unreachable(f"DNS: cannot resolve {host}: {getattr(exc, 'strerror', None) or exc}",
                          "check the host name in the setting and this host's resolver (/etc/resolv.conf)") from None
    return found


def _connect(host, addresses, port):
    last = None
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(TIMEOUT)
        try:
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise Unreachable(f"TCP: cannot connect to {host} port {port}: {getattr(last, 'strerror', None) or last}",
                      "is the control plane up? check firewalls and proxies between this host and it")


def _handshake(cfg, sock, host):
    context, files = trust(cfg)
    try:
        tls = context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        raise Unreachable(f"TLS: the server certificate is not trusted: {exc.verify_message} "
                          f"(trusted: {', '.join(files)})",
                          "the CA does not match this control plane: check CERT_DIR/ca.crt and "
                          "SERVER_CA_FILE, and that the URL names the right server") from None
    except (ssl.SSLError, OSError) as exc:
        raise Unreachable(f"TLS handshake with {host} failed: {exc}",
                          "the port does not speak TLS or something in between interferes") from None
    cert = tls.getpeercert()
    until = cert.get("notAfter", "?") if cert else "?"
    return tls, f"{tls.version()} verified against {', '.join(files)} (server certificate valid until {until})"


def _get_head(sock, parts):
    """The response head lines of ``GET <prefix>/``; raises Unreachable."""
    host = parts.netloc.rpartition("@")[2]
    request = f"GET {parts.path.rstrip('/')}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n" \
              "User-Agent: pulseup-agent-doctor\r\n\r\n"
    data = b""
    try:
        sock.sendall(request.encode("ascii"))
        while b"\r\n\r\n" not in data and len(data) < MAX_HEAD:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise Unreachable(f"HTTP: no answer: {exc}", "the server accepted the connection but did not answer") from None
    if not data.startswith(b"HTTP/1."):
        raise Unreachable("HTTP: the server did not answer with HTTP", "check that the URL names the HTTP API")
    return data.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")


def check_websocket(findings):
    cfg = findings.cfg
    if not cfg.websocket_url:
        return skipped("websocket_url", "WEBSOCKET_URL is not set (see config)")
    try:
        detail, _ = probe(cfg, cfg.websocket_url)
    except Unreachable as exc:
        return failed("websocket_url", f"{cfg.websocket_url}: {exc.detail}", exc.hint)
    return passed("websocket_url", detail)


def check_api(findings):
    cfg = findings.cfg
    if not (cfg.api_base_url or cfg.websocket_url):
        return skipped("api_base_url", "neither API_BASE_URL nor WEBSOCKET_URL is set (see config)")
    url = api_url(cfg)
    started = time.time()
    try:
        detail, head = probe(cfg, url, fetch_head=True)
    except Unreachable as exc:
        return failed("api_base_url", f"{url}: {exc.detail}", exc.hint)
    findings.facts["date"] = (_date_of(head), (started + time.time()) / 2)
    source = "" if cfg.api_base_url else " (derived from WEBSOCKET_URL)"
    return passed("api_base_url", f"{url}{source}: {detail}; answers {head[0]}")


def _date_of(head):
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "date":
            try:
                return email.utils.parsedate_to_datetime(value.strip()).timestamp()
            except (TypeError, ValueError, IndexError, OverflowError):
                return None
    return None


def check_clock(findings):
    if "date" not in findings.facts:
        return skipped("clock", "the control plane's HTTP API was not reached (see api_base_url)")
    server, local = findings.facts["date"]
    if server is None:
        return passed("clock", "not measured: the control plane sent no valid Date header")
    skew = local - server
    shown = f"this host's clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the control plane"
    if abs(skew) > MAX_SKEW:
        return failed("clock", f"{shown} (more than {MAX_SKEW:g} s)",
                      "set the clock: enable NTP (`timedatectl set-ntp true`) or check chrony/systemd-timesyncd; "
                      "a wrong clock makes certificates look expired or not yet valid")
    return passed("clock", f"{shown} (within {MAX_SKEW:g} s; the Date header has 1 s resolution)")


CHECKS = [("websocket_url", check_websocket), ("api_base_url", check_api), ("clock", check_clock)]
