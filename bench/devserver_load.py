"""Benchmark: hold N authenticated agent connections on one dev server (default 500).

The server runs as a subprocess (`python -m agent devserver`, loopback, port 0); this
process enrolls N identities over HTTPS, then opens N TLS WebSockets from gevent
greenlets, answers each challenge, holds the connections for `--hold` seconds, checks the
server lists them all as connected, and does one call round trip on each.
It prints: connections held, time to connect all, server and client memory (RSS).

    python bench/devserver_load.py [--agents 500] [--hold 5] [--concurrency 50]

A benchmark, not a test: it asserts nothing beyond "all connected", and the duration is
bounded (`--deadline`, default 120 s).
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import gevent.pool  # noqa: E402
import requests  # noqa: E402
import websocket  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_server(data_dir):
    proc = subprocess.Popen([sys.executable, "-m", "agent", "devserver", "--data-dir", data_dir,
                             "--listen", "127.0.0.1:0", "--log-level", "WARNING"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    info = {}
    with gevent.Timeout(30):
        for line in proc.stdout:
            key, sep, value = line.strip().partition("=")
            if key in ("URL", "WEBSOCKET_URL"):
                info[key] = value
            if len(info) == 2:
                break
    return proc, info


def rss_kib(pid="self"):
    with open("/proc/%s/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Agent:
    def __init__(self, index, directory):
        self.key = ed25519.Ed25519PrivateKey.generate()
        self.dir = os.path.join(directory, "a%d" % index)
        os.makedirs(self.dir)
        self.ws = None
        self.uid = None

    def csr(self):
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PulseUp"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "agent-bench")])
        csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(self.key, None)
        return csr.public_bytes(serialization.Encoding.PEM).decode()

    def enroll(self, http, url, token):
        reply = http.post(url + "/api/agent/enroll", timeout=30,
                          json={"join_token": token, "csr_pem": self.csr()}).json()
        self.uid, self.cert_pem = reply["server_uid"], reply["certificate_pem"]
        self.cert_file = os.path.join(self.dir, "agent.crt")
        self.key_file = os.path.join(self.dir, "agent.key")
        with open(self.cert_file, "w") as f:
            f.write(self.cert_pem)
        with open(self.key_file, "wb") as f:
            f.write(self.key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))

    def connect(self, ws_url, ca_file):
        self.ws = websocket.create_connection(
            ws_url, timeout=60, skip_utf8_validation=True,
            sslopt={"ca_certs": ca_file, "certfile": self.cert_file, "keyfile": self.key_file})
        nonce = json.loads(self.ws.recv())["data"]["nonce"]
        signature = base64.b64encode(self.key.sign(nonce.encode())).decode()
        self.ws.send(json.dumps({"type": "auth_proof", "data": {
            "method": "mtls", "certificate": self.cert_pem, "signature": signature,
            "nonce": nonce, "version": "bench"}}))
        reply = json.loads(self.ws.recv())
        if not reply["data"].get("success"):
            raise RuntimeError(reply)
        json.loads(self.ws.recv())   # connected

    def answer_one_call(self):
        frame = json.loads(self.ws.recv())
        self.ws.send(json.dumps({"type": "response", "call_id": frame["call_id"], "data": {
            "success": True, "data": {"pong": True}, "error": "", "code": ""}}))


def run(args):
    work = tempfile.mkdtemp(prefix="devserver-bench-")
    data_dir = os.path.join(work, "dev")
    proc, info = start_server(data_dir)
    try:
        return measure(args, work, data_dir, proc, info)
    finally:
        proc.terminate()
        proc.wait(10)


def measure(args, work, data_dir, proc, info):
    http = requests.Session()
    http.trust_env = False
    http.verify = os.path.join(data_dir, "ca.crt")
    with open(os.path.join(data_dir, "admin.token")) as f:
        http.headers["Authorization"] = "Bearer " + f.read().strip()
    url, pool = info["URL"], gevent.pool.Pool(args.concurrency)
    agents = [Agent(i, work) for i in range(args.agents)]
    started = time.monotonic()
    tokens = [http.post(url + "/api/tokens", json={}).json()["token"] for _ in agents]
    pool.map(lambda pair: pair[0].enroll(http, url, pair[1]), zip(agents, tokens))
    enrolled = time.monotonic() - started
    server_rss_before = rss_kib(proc.pid)
    started = time.monotonic()
    pool.map(lambda a: a.connect(info["WEBSOCKET_URL"], http.verify), agents)
    connect_time = time.monotonic() - started
    listed = http.get(url + "/api/agents").json()["agents"]
    held = sum(1 for a in listed if a["connected"])
    gevent.sleep(args.hold)
    round_trip = call_each(http, url, agents, pool)
    report(args, held, enrolled, connect_time, round_trip, server_rss_before, proc)
    for agent in agents:
        agent.ws.close(timeout=0.1)
    return 0 if held == args.agents else 1


def call_each(http, url, agents, pool):
    """One call per agent through the HTTP call API; returns the total time."""
    def one(agent):
        waiter = gevent.spawn(agent.answer_one_call)
        http.post(url + "/api/agents/%s/calls" % agent.uid, json={"event": "agent.ping"})
        waiter.join()
    started = time.monotonic()
    pool.map(one, agents)
    return time.monotonic() - started


def report(args, held, enrolled, connect_time, round_trip, rss_before, proc):
    server_rss = rss_kib(proc.pid)
    client_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("agents requested:        %d" % args.agents)
    print("connections held:        %d (after %.0f s: see server listing)" % (held, args.hold))
    print("enroll all:              %.2f s" % enrolled)
    print("connect+auth all:        %.2f s (%.1f ms per agent, concurrency %d)"
          % (connect_time, 1000 * connect_time / args.agents, args.concurrency))
    print("one call to each agent:  %.2f s" % round_trip)
    print("server RSS:              %.1f MiB (%.1f MiB before connecting, %.1f KiB/conn)"
          % (server_rss / 1024, rss_before / 1024,
             (server_rss - rss_before) / max(held, 1)))
    print("client process max RSS:  %.1f MiB" % (client_rss / 1024))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--hold", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--deadline", type=float, default=120.0)
    args = parser.parse_args()
    with gevent.Timeout(args.deadline):
        return run(args)


if __name__ == "__main__":
    sys.exit(main())
