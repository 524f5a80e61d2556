"""sd_notify(3) over the plain NOTIFY_SOCKET datagram socket, without libsystemd.

systemd passes the socket path in ``NOTIFY_SOCKET``; a leading ``@`` names a
socket in the abstract namespace (sd_notify(3), "NOTES"). Without the variable
(not started by systemd with ``Type=notify``) every call is a no-op.
"""

import os
import socket

from agent import log

_log = log.get("sdnotify")


def address(value):
    """The socket address for a NOTIFY_SOCKET value (``@name`` -> abstract)."""
    if value.startswith("@"):
        return "\0" + value[1:]
    return value


def notify(*lines, environ=None):
    """Send ``lines`` (``READY=1``, ``STATUS=...``) to systemd; True when sent.

    Never raises: a failed notification is logged, the service keeps running.
    """
    target = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
    if not target or not lines:
        return False
    payload = "\n".join(lines).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(payload, address(target))
    except OSError as exc:
        _log.warning("sd_notify to %s failed: %s", target, exc)
        return False
    return True
