"""HTTP and HTTPS requests to the proxy under test (a module of its own: test modules import
it by its package path, never through the directory's conftest, whose name other directories
share)."""

import socket
import ssl

from harness import wait_until

from agent.services.caddy.tls import local_root_path


def http_get(cfg, host, path="/", timeout=5.0):
    """(status, body, headers) of a plain HTTP request to the proxy's published port."""
    import requests

    response = requests.get(f"http://127.0.0.1:{cfg.caddy_http_port}{path}",
                            headers={"Host": host}, timeout=timeout, allow_redirects=False)
    return response.status_code, response.text, response.headers


def https_get(cfg, host, path="/", timeout=5.0):
    """(status line, body) over TLS with SNI `host`, verified against Caddy's local root."""
    context = ssl.create_default_context(cafile=local_root_path(f"{cfg.state_dir}/caddy/data"))
    with socket.create_connection(("127.0.0.1", cfg.caddy_https_port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body.decode()


def wait_for_body(cfg, host, expected, timeout=20.0):
    def check():
        status, body, _ = http_get(cfg, host)
        return status == 200 and body.strip() == expected
    wait_until(check, f"{host} serving {expected}", timeout=timeout)
