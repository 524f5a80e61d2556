"""sd_notify over NOTIFY_SOCKET (path and abstract namespace)."""

import os
import socket

from agent import sdnotify


def _receiver(address):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_no_variable_is_a_noop():
    assert sdnotify.notify("READY=1", environ={}) is False


def test_path_socket(tmp_path):
    path = str(tmp_path / "notify")
    with _receiver(path) as sock:
        assert sdnotify.notify("READY=1", "STATUS=bound", environ={"NOTIFY_SOCKET": path})
        assert sock.recv(4096) == b"READY=1\nSTATUS=bound"


def test_abstract_socket():
    name = f"pulseup-test-notify-{os.getpid()}"
    with _receiver("\0" + name) as sock:
        assert sdnotify.notify("STOPPING=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"STOPPING=1"


def test_unreachable_socket_does_not_raise(tmp_path):
    assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "missing")}) is False
