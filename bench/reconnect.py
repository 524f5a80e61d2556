"""Benchmark 5: reconnect after a control-plane restart, one real worker and N simulated agents.

The devserver runs as a subprocess on a fixed loopback port. Connected to it: one real worker
(``python -m bench.common worker``) and ``--agents`` (200) simulated agents, each a real
:class:`agent.worker.link.Link` (own identity, outbox, backoff with equal jitter: docs/protocol.md, "Connection")
in this process. The devserver is killed (SIGTERM, no close frames: a crash), stays down
``--down`` seconds, and is started again on the same port and data directory. Each agent's
reconnect time is its ``authenticated_at`` (server clock) minus the moment the new server
printed its URL. Baseline, in the same run: one fresh connect + authenticate while the
server is up (what reconnecting would cost without any backoff wait).
A stampede shows up as a high peak in the "most agents re-authenticated in one 100 ms
window" figure (the ratio is that peak over all agents: 1.0 = all at once).

    .venv/bin/python -m bench.reconnect [--agents 200] [--down 2]
"""

from bench import common  # noqa: I001  (patches gevent first)

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import gevent.pool  # noqa: E402
import requests  # noqa: E402
import websocket  # noqa: E402

BENCH = "reconnect"
WINDOW = 0.1


class Server:
    """The devserver subprocess, restartable on the same port and data directory."""

    def __init__(self, work):
        self.data_dir, self.port = os.path.join(work, "dev"), common.free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "devserver", "--data-dir", self.data_dir,
             "--listen", f"127.0.0.1:{self.port}", "--log-level", "WARNING"],
            cwd=common.ROOT, env=common.python_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.url = common.wait_line(self.proc, "URL=")
        self.ready_at = time.time()
        self.ws_url = "wss" + self.url[len("https"):] + "/ws/agent_v2"
        self.ca_file = os.path.join(self.data_dir, "ca.crt")
        self.http = requests.Session()
        self.http.trust_env, self.http.verify = False, self.ca_file
        with open(os.path.join(self.data_dir, "admin.token")) as handle:
            self.http.headers["Authorization"] = "Bearer " + handle.read().strip()

    def kill(self):
        self.proc.terminate()
        self.proc.wait(10)

    def token(self):
        return self.http.post(self.url + "/api/tokens", json={}, timeout=30).json()["token"]

    def agents(self):
        return self.http.get(self.url + "/api/agents", timeout=30).json()["agents"]


def agent_config(server, directory):
    from agent import config
    return config.defaults().replace(
        websocket_url=server.ws_url, enroll_ca_file=server.ca_file, cert_dir=f"{directory}/certs",
        state_dir=f"{directory}/state", agent_log_dir=f"{directory}/logs")


def start_links(server, work, count):
    from agent.worker.identity import enroll
    from agent.worker.link import Link
    from agent.worker.outbox import Outbox
    pool, links = gevent.pool.Pool(20), []

    def make(index):
        cfg = agent_config(server, os.path.join(work, f"sim{index}"))
        identity = enroll(cfg, server.token(), {"hostname": f"sim{index}"})
        links.append(Link(cfg, identity, Outbox(cfg.state_dir)))
    pool.map(make, range(count))
    return links, gevent.pool.Group([gevent.spawn(link.run) for link in links])


def connect_and_auth(server, identity):
    """One fresh TLS WebSocket + challenge authentication; returns seconds."""
    started = time.monotonic()
    ws = websocket.create_connection(server.ws_url, sslopt={"context": identity.ssl_context()},
                                     skip_utf8_validation=True, timeout=30)
    nonce = json.loads(ws.recv())["data"]["nonce"]
    ws.send(json.dumps({"type": "auth_proof", "data": {
        "method": "mtls", "certificate": identity.cert_pem, "nonce": nonce, "version": "bench",
        "signature": identity.sign(nonce)}}))
    reply = json.loads(ws.recv())
    elapsed = time.monotonic() - started
    ws.close(timeout=1)
    if not reply["data"].get("success"):
        raise RuntimeError(f"baseline authentication failed: {reply}")
    return elapsed


def baseline(server, work, rounds=10):
    from agent.worker.identity import enroll
    cfg = agent_config(server, os.path.join(work, "baseline"))
    identity = enroll(cfg, server.token(), {"hostname": "baseline"})
    return common.percentile([connect_and_auth(server, identity) for _ in range(rounds)], 0.5)


def wait_all(server, expected, since, deadline):
    """Poll the server until ``expected`` agents authenticated after ``since``; their uid -> time."""
    with gevent.Timeout(deadline):
        while True:
            done = {a["server_uid"]: a["authenticated_at"] for a in server.agents()
                    if a["connected"] and (a["authenticated_at"] or 0) > since}
            if len(done) >= expected:
                return done
            gevent.sleep(0.05)


def peak_per_window(times):
    counts = {}
    for moment in times:
        counts[int(moment // WINDOW)] = counts.get(int(moment // WINDOW), 0) + 1
    return max(counts.values()) if counts else 0


def restart_and_measure(server, expected, down):
    killed = time.time()
    server.kill()
    gevent.sleep(down)
    server.start()
    done = wait_all(server, expected, killed, deadline=120)
    return {uid: at - server.ready_at for uid, at in done.items()}


def run(agents, down):
    # the simulated agents' "connection lost" warnings would bury the table
    logging.getLogger("agent").setLevel(logging.ERROR)
    work = tempfile.mkdtemp(prefix="pulseup-bench-reconnect-")
    server, procs, group = Server(work), [], None
    server.start()
    try:
        connect_cost = baseline(server, work)
        links, group = start_links(server, work, agents)
        worker_uid, worker = start_worker(server, work)
        procs.append(worker)
        wait_all(server, agents + 1, 0, deadline=120)
        delays = restart_and_measure(server, agents + 1, down)
    finally:
        if group is not None:
            group.kill(block=False)
        for proc in procs:
            proc.terminate()
        server.kill()
    report(delays, worker_uid, connect_cost, agents, down)
    return 0


def start_worker(server, work):
    from agent import config
    from agent.worker.identity import enroll
    directory = os.path.join(work, "worker")
    env = {"WEBSOCKET_URL": server.ws_url, "ENROLL_CA_FILE": server.ca_file, "CERT_DIR": f"{directory}/certs",
           "STATE_DIR": f"{directory}/state", "AGENT_LOG_DIR": f"{directory}/logs", "LOG_LEVEL": "WARNING"}
    cfg = config.load(config_file=os.devnull, environ=env, use_dotenv=False)
    uid = enroll(cfg, server.token(), {"hostname": "worker"}).server_uid
    proc = subprocess.Popen([sys.executable, "-m", "bench.common", "worker"], cwd=common.ROOT,
                            env=common.python_env(**env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return uid, proc


def report(delays, worker_uid, connect_cost, agents, down):
    note = f"server down {down:g} s; baseline: one fresh connect+auth"
    common.report(BENCH, "real worker: restart -> re-authenticated", delays.pop(worker_uid), "s",
                  connect_cost, note=note)
    times = sorted(delays.values())
    for label, fraction in (("p10", 0.1), ("p50", 0.5), ("p90", 0.9), ("max", 1.0)):
        common.report(BENCH, f"{agents} agents: {label} restart -> re-authenticated",
                      common.percentile(times, fraction), "s", connect_cost, note=note)
    common.report(BENCH, f"{agents} agents: spread p90 - p10",
                  common.percentile(times, 0.9) - common.percentile(times, 0.1), "s")
    peak = peak_per_window(times)
    common.report(BENCH, f"{agents} agents: most re-authenticated in one {WINDOW * 1000:g} ms",
                  peak, "agents", agents, note="ratio 1.0 would be a stampede")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--down", type=float, default=2.0)
    args = parser.parse_args(argv)
    return run(args.agents, args.down)


if __name__ == "__main__":
    sys.exit(main())
