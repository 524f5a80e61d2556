"""A stand-in worker for arbiter tests (stdlib only; runs under /usr/bin/python3 as the test user).

argv: OUT MODE [ARG]; every event is appended to OUT as one JSON line.
Modes: exit CODE | sleep-exit SECONDS | sleep | ignore-term | ipc SOCKET
"""

import json
import os
import signal
import socket
import struct
import sys
import time

OUT, MODE = sys.argv[1], sys.argv[2]


def record(**fields):
    with open(OUT, "a") as handle:
        handle.write(json.dumps(dict(pid=os.getpid(), t=time.monotonic(), **fields)) + "\n")


def identity():
    wanted = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                wanted[key] = [int(v) for v in value.split()]
    umask = os.umask(0)
    os.umask(umask)
    return dict(wanted, umask=umask, cwd=os.getcwd(), home=os.environ.get("HOME"))


def ipc_status(path):
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    sock.connect(path)
    body = json.dumps({"id": "w1", "op": "worker.status", "args": {"connected": True, "version": "0.0.1"}}).encode()
    sock.sendall(struct.pack(">I", len(body)) + body)
    header = sock.recv(4)
    return json.loads(sock.recv(struct.unpack(">I", header)[0]))


record(event="start", **identity())
if MODE == "exit":
    sys.exit(int(sys.argv[3]))
if MODE == "sleep-exit":
    time.sleep(float(sys.argv[3]))
    sys.exit(1)
if MODE == "ignore-term":
    signal.signal(signal.SIGTERM, lambda *a: record(event="term-ignored"))
else:
    signal.signal(signal.SIGTERM, lambda *a: (record(event="term"), sys.exit(0)))
if MODE == "ipc":
    record(event="reply", reply=ipc_status(sys.argv[3]))
while True:
    time.sleep(0.05)
