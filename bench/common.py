"""Shared pieces of the benchmarks: result lines, statistics, process figures, a minimal TLS
WebSocket echo server (the baseline peer), a bare websocket-client caller, and a "lab" that
runs an in-process devserver with real workers in subprocesses.

Every entry script patches gevent first, before ssl/socket are imported (docs/hosts.md, "gevent").
This module is also a subprocess entry point::

    python -m bench.common echo CERT KEY      # prints PORT=<n>, then echoes text frames
    python -m bench.common worker             # a Worker configured from the environment
    python -m bench.common idle-client URL CA # holds one idle TLS WebSocket (footprint baseline)
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.server  # noqa: E402
import websocket  # noqa: E402
from gevent import ssl  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_PREFIX = "RESULT "


# -- results ------------------------------------------------------------------------------

def report(bench, metric, value, unit, baseline=None, note=""):
    """Print one figure: a human line and a machine line (``RESULT {json}``) for bench.run."""
    ratio = (value / baseline) if baseline not in (None, 0) else None
    row = {"bench": bench, "metric": metric, "value": round(value, 4), "unit": unit,
           "baseline": None if baseline is None else round(baseline, 4),
           "ratio": None if ratio is None else round(ratio, 3), "note": note}
    shown = f"{bench:10} {metric:42} {value:12.3f} {unit:8}"
    if baseline is not None:
        shown += f" baseline {baseline:10.3f}  ratio {ratio:6.2f}x" if ratio is not None else " baseline 0"
    print(shown + (f"  ({note})" if note else ""), flush=True)
    print(RESULT_PREFIX + json.dumps(row), flush=True)
    return row


def percentile(values, fraction):
    """Nearest-rank percentile of ``values`` (fraction in 0..1); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[index]


def load_run(call, in_flight, duration, warmup=0.5):
    """Run ``call()`` from ``in_flight`` greenlets for ``duration`` s; (latencies in s, calls/s).

    The first ``warmup`` seconds are not recorded (TLS session, caches).
    """
    latencies = []
    start = time.monotonic()
    record_from, stop_at = start + warmup, start + warmup + duration

    def loop():
        while time.monotonic() < stop_at:
            begun = time.monotonic()
            call()
            if begun >= record_from:
                latencies.append(time.monotonic() - begun)
    gevent.joinall([gevent.spawn(loop) for _ in range(in_flight)], raise_error=True)
    return latencies, len(latencies) / duration


# -- process figures ----------------------------------------------------------------------

def rss_kib(pid="self"):
    """Resident set size of ``pid`` in KiB (from /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid="self"):
    """User + system CPU time of ``pid`` so far (/proc/<pid>/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def python_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSEUP", "WEBSOCKET", "JOIN"))}
    env["PYTHONPATH"] = ROOT
    env.update({k: str(v) for k, v in extra.items()})
    return env


def wait_line(proc, prefix, timeout=30):
    """The rest of the first stdout line of ``proc`` starting with ``prefix``."""
    with gevent.Timeout(timeout):
        for line in proc.stdout:
            if line.startswith(prefix):
                return line[len(prefix):].strip()
    raise RuntimeError(f"subprocess exited before printing {prefix}")


# -- the baseline peer: a minimal TLS WebSocket echo server (gevent + wsproto) ------------

class EchoServer:
    """Echoes every text message on TLS WebSockets; ``on_open(sock, ws)`` may replace the echo
    loop after the upgrade (hostile servers in tests write raw bytes there)."""

    def __init__(self, cert_file, key_file, on_open=None):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert_file, key_file)
        self.on_open = on_open
        self.server = None

    def start(self, host="127.0.0.1", port=0):
        self.server = gevent.server.StreamServer((host, port), self._handle, ssl_context=self.context)
        self.server.start()
        return self.server.server_port

    def stop(self):
        if self.server is not None:
            self.server.stop(timeout=1)

    def _handle(self, sock, address):
        # imported here: `python -m bench.common worker` imports this module too, and wsproto
        # (with h11, ~1 MB) is no part of a real worker (bench/footprint.py)
        from wsproto import ConnectionType, WSConnection
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ws = WSConnection(ConnectionType.SERVER)
        try:
            self._serve(sock, ws)
        except (OSError, ssl.SSLError):
            pass
        finally:
            sock.close()

    def _serve(self, sock, ws):
        from wsproto.events import AcceptConnection, CloseConnection, Message, Ping, Request, TextMessage
        parts = []
        while True:
            data = sock.recv(65536)
            ws.receive_data(data or None)
            for event in ws.events():
                if isinstance(event, Request):
                    sock.sendall(ws.send(AcceptConnection()))
                    if self.on_open is not None:
                        return self.on_open(sock, ws)
                elif isinstance(event, TextMessage):
                    parts.append(event.data)
                    if event.message_finished:
                        sock.sendall(ws.send(Message(data="".join(parts))))
                        parts = []
                elif isinstance(event, Ping):
                    sock.sendall(ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    sock.sendall(ws.send(event.response()))
                    return None
            if not data:
                return None


def server_cert(directory):
    """(cert file, key file, CA file) for 127.0.0.1, issued by a devserver CA in ``directory``."""
    from agent.devserver.ca import CertificateAuthority
    os.makedirs(directory, mode=0o700, exist_ok=True)
    authority = CertificateAuthority(directory)
    cert_file, key_file = authority.ensure_server_cert("127.0.0.1")
    return cert_file, key_file, authority.ca_file


class BareClient:
    """One websocket-client connection; JSON frames correlated by ``id`` (the baseline caller)."""

    def __init__(self, url, ca_file):
        self.ws = websocket.create_connection(url, sslopt={"ca_certs": ca_file}, timeout=30,
                                              skip_utf8_validation=True, enable_multithread=True)
        self.pending, self.next_id = {}, 0
        self.reader = gevent.spawn(self._read)

    def _read(self):
        while True:
            frame = json.loads(self.ws.recv())
            result = self.pending.pop(frame["id"], None)
            if result is not None:
                result.set(frame)

    def call(self, payload=None, timeout=30):
        self.next_id += 1
        result = self.pending[self.next_id] = gevent.event.AsyncResult()
        self.ws.send(json.dumps({"id": self.next_id, "type": "call", "data": payload or {}}))
        return result.get(timeout=timeout)

    def close(self):
        self.reader.kill()
        self.ws.close(timeout=1)


def start_echo_process(work):
    """The echo server in its own process; returns (Popen, wss URL, CA file)."""
    cert_file, key_file, ca_file = server_cert(os.path.join(work, "echo-ca"))
    proc = subprocess.Popen([sys.executable, "-m", "bench.common", "echo", cert_file, key_file],
                            cwd=ROOT, env=python_env(), stdout=subprocess.PIPE, text=True)
    port = int(wait_line(proc, "PORT="))
    return proc, f"wss://127.0.0.1:{port}/echo", ca_file


def process_tree_rss_kib(pid):
    """RSS of ``pid`` and of every process below it, in KiB (the issue's "process tree")."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            total += rss_kib(current)
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    pending.extend(int(child) for child in handle.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def harness():
    """The integration test harness package (private dockerd, Caddy, git server), imported."""
    path = os.path.join(ROOT, "tests", "integration")
    if path not in sys.path:
        sys.path.insert(0, path)
    import harness as module
    import harness.images  # noqa: F401  (build_base_image and friends, as harness.images)
    return module


def private_dockerd():
    """A started private Docker engine (tests/integration/harness/dockerd.py); call .stop()."""
    return harness().DockerDaemon().start()


# -- the lab: an in-process devserver and real workers in subprocesses ---------------------

class Lab:
    """A temporary directory, a devserver in this process, enrolled workers as subprocesses."""

    def __init__(self, prefix="pulseup-bench-"):
        from agent.devserver.server import DevServer
        self.work = tempfile.mkdtemp(prefix=prefix)
        self.devserver = DevServer(os.path.join(self.work, "dev"), listen="127.0.0.1:0").start()
        self.procs, self._files = [], []

    def worker_env(self, name, **settings):
        base = os.path.join(self.work, name)
        env = {"WEBSOCKET_URL": self.devserver.ws_url, "ENROLL_CA_FILE": self.devserver.ca_file,
               "STATE_DIR": f"{base}/state", "CERT_DIR": f"{base}/certs", "AGENT_LOG_DIR": f"{base}/logs",
               "LOG_LEVEL": "WARNING"}
        env.update({k.upper(): str(v) for k, v in settings.items()})
        return env

    def enroll(self, env):
        """Enroll the identity of a worker environment in this process; returns its server_uid."""
        from agent import config
        from agent.worker.identity import enroll
        cfg = config.load(config_file=os.devnull, environ=env, use_dotenv=False)
        return enroll(cfg, self.devserver.create_token(), {"hostname": "bench"}).server_uid

    def start_worker(self, name="worker", **settings):
        """Enroll and start ``python -m bench.common worker``; returns (Popen, server_uid)."""
        env = self.worker_env(name, **settings)
        uid = self.enroll(env)
        stderr = open(os.path.join(self.work, f"{name}.stderr"), "w")
        self._files.append(stderr)
        proc = subprocess.Popen([sys.executable, "-m", "bench.common", "worker"], cwd=ROOT,
                                env=python_env(**env), stdout=subprocess.DEVNULL, stderr=stderr)
        self.procs.append(proc)
        if self.devserver.wait_connected(uid, timeout=30) is None:
            raise RuntimeError(f"worker {name} did not connect; see {stderr.name}")
        return proc, uid

    def close(self):
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for handle in self._files:
            handle.close()
        self.devserver.stop()


# -- subprocess entry points --------------------------------------------------------------

def _sleep_command(ctx, request):
    """The slow command of the pressure bench, registered in this process only (docs/design.md,
    "Testing privileged operations")."""
    gevent.sleep(request.get("seconds", 0) if isinstance(request, dict) else 0)
    return {"slept": True}


def _worker_main():
    from agent import config, log
    from agent.handlers import build_registry
    from agent.worker.identity import load_identity
    from agent.worker.main import Worker
    cfg = config.load(config_file=os.devnull, use_dotenv=False)
    log.setup(cfg.log_level, cfg.log_format)
    registry = build_registry()
    registry.add("bench.sleep", _sleep_command)
    worker = Worker(cfg, load_identity(cfg), registry)
    gevent.signal_handler(15, worker.stopping.set)
    modules_to = os.environ.get("PULSEUP_BENCH_MODULES")    # sys.modules on SIGUSR2, for bench work
    if modules_to:
        gevent.signal_handler(12, lambda: _dump_modules(modules_to))
    profile_to = os.environ.get("PULSEUP_BENCH_PROFILE")     # cProfile of the worker, for bench work
    if not profile_to:
        return worker.run()
    import cProfile
    profiler = cProfile.Profile()
    try:
        return profiler.runcall(worker.run)
    finally:
        profiler.dump_stats(profile_to)


def _dump_modules(path):
    with open(path, "w") as handle:
        handle.write("\n".join(sorted(sys.modules)) + "\n")


def _echo_main(cert_file, key_file):
    server = EchoServer(cert_file, key_file)
    print(f"PORT={server.start()}", flush=True)
    gevent.wait()


def _idle_client_main(url, ca_file):
    client = websocket.create_connection(url, sslopt={"ca_certs": ca_file}, skip_utf8_validation=True,
                                         enable_multithread=True)
    print("CONNECTED=1", flush=True)
    while True:     # answer nothing, send a ping now and then like the agent's keep-alive
        gevent.sleep(30)
        client.ping()


if __name__ == "__main__":
    role, args = sys.argv[1], sys.argv[2:]
    if role == "worker":
        sys.exit(_worker_main())
    {"echo": _echo_main, "idle-client": _idle_client_main}[role](*args)
