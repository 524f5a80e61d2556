"""Certificate status of a managed domain (docs/commands.md, "Domains and the proxy").

A TLS handshake with SNI against the local proxy's HTTPS port, not through public DNS:
``active`` when the served certificate covers the host and verifies against the issuer's
root (the system roots for ACME, Caddy's local root for ``tls internal``); ``pending`` with
the reason otherwise.
"""

import os
import socket
import ssl

# Caddy's local CA root under its data directory (XDG_DATA_HOME=/data in the container).
LOCAL_ROOT = ("caddy", "pki", "authorities", "local", "root.crt")


def local_root_path(data_dir):
    return os.path.join(data_dir, *LOCAL_ROOT)


def tls_context(issuer, data_dir):
    """An SSLContext verifying against the right roots; raises FileNotFoundError when
    Caddy's local root does not exist yet (no internal certificate issued)."""
    if issuer == "internal":
        return ssl.create_default_context(cafile=local_root_path(data_dir))
    return ssl.create_default_context()


def check_certificate(host, port, issuer, data_dir, address="127.0.0.1", timeout=5.0):
    """(ssl_status, ssl_error or None) for ``host`` served on ``address:port``."""
    try:
        context = tls_context(issuer, data_dir)
    except (OSError, ssl.SSLError) as exc:
        return "pending", f"no local CA root yet: {getattr(exc, 'strerror', None) or exc}"
    try:
        with socket.create_connection((address, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host):
                return "active", None
    except ssl.SSLCertVerificationError as exc:
        return "pending", f"certificate not valid for {host}: {exc.verify_message or exc}"
    except (OSError, ssl.SSLError) as exc:
        return "pending", f"TLS handshake with the proxy failed: {exc}"
