"""Benchmark 2: idle footprint of the worker (and the supervisor) vs a bare idle client.

The worker runs as a subprocess (``python -m bench.common worker``: the real ``Worker`` with
the full registry, run as root here because ``worker_main`` refuses root; the objects and
loops are the same), connected to an in-process devserver, with a private Docker engine
(tests/integration/harness/dockerd.py) as its DOCKER_HOST, so its event watcher, samplers and
proxy re-apply run as on a real server. ``--idle`` seconds (60 by default, issue 19) after
authentication it reports the RSS of its process tree and its CPU use over the idle window.
Baseline, in the same run: a process holding one idle TLS WebSocket with websocket-client
under gevent (the least an agent can be). The supervisor
(``python -m agent supervisor``, root, private socket path) is measured the same way against
its own baseline: a bare interpreter holding one Unix socket (issue 19: goal <= 20 MB).

    .venv/bin/python -m bench.footprint [--idle 60] [--no-docker]
"""

from bench import common  # noqa: I001  (patches gevent first)

import argparse  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

BENCH = "footprint"
SETTLE = 3.0


def idle_figures(pids, seconds, started):
    """{pid: (RSS KiB of its process tree at the end, CPU % of one core over the window)};
    the window ends ``seconds`` after ``started`` (monotonic), and begins SETTLE s after it."""
    gevent.sleep(max(0.0, started + SETTLE - time.monotonic()))   # start-up work is not idle time
    before = {pid: common.cpu_seconds(pid) for pid in pids}
    begun = time.monotonic()
    gevent.sleep(max(0.0, started + seconds - begun))
    elapsed = time.monotonic() - begun
    return {pid: (common.process_tree_rss_kib(pid), 100 * (common.cpu_seconds(pid) - before[pid]) / elapsed)
            for pid in pids}


def start_baseline(work):
    echo, url, ca_file = common.start_echo_process(work)
    client = subprocess.Popen([sys.executable, "-m", "bench.common", "idle-client", url, ca_file],
                              cwd=common.ROOT, env=common.python_env(), stdout=subprocess.PIPE, text=True)
    common.wait_line(client, "CONNECTED=")
    return echo, client


BARE = "import socket, time\ns = socket.socket(socket.AF_UNIX)\nwhile True:\n    time.sleep(3600)\n"


def start_supervisor(work):
    """(supervisor, bare baseline) processes; (None, None) unless root (the supervisor refuses)."""
    if os.geteuid() != 0:
        return None, None
    env = common.python_env(SUPERVISOR_SOCKET=os.path.join(work, "run", "supervisor.sock"),
                            STATE_DIR=os.path.join(work, "supervisor-state"), LOG_LEVEL="WARNING")
    supervisor = subprocess.Popen([sys.executable, "-m", "agent", "--config", os.devnull, "supervisor"],
                                  cwd=common.ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bare = subprocess.Popen([sys.executable, "-c", BARE], cwd=common.ROOT, env=common.python_env())
    return supervisor, bare


def run(idle, docker):
    daemon = common.private_dockerd() if docker else None
    lab, extra = None, []
    try:
        lab = common.Lab()
        echo, client = start_baseline(lab.work)
        supervisor, bare = start_supervisor(lab.work)
        extra = [p for p in (echo, client, supervisor, bare) if p is not None]
        settings = {"docker_host": daemon.host} if daemon else {}
        worker, _uid = lab.start_worker("footprint", **settings)
        authenticated = time.monotonic()      # start_worker returns once the devserver has it
        pids = [worker.pid, client.pid] + ([supervisor.pid, bare.pid] if supervisor else [])
        figures = idle_figures(pids, idle, authenticated)
    finally:
        for proc in extra:
            proc.terminate()
            proc.wait(10)
        if lab is not None:
            lab.close()
        if daemon is not None:
            daemon.stop()
    docker_note = "Docker reachable (private dockerd)" if daemon else "Docker unreachable"
    note = (f"process tree {idle:g} s after authentication, idle, {docker_note}; baseline: idle "
            "websocket-client process; goal <= 45 MiB")
    (w_rss, w_cpu), (b_rss, b_cpu) = figures[worker.pid], figures[client.pid]
    common.report(BENCH, "worker RSS", w_rss / 1024, "MiB", b_rss / 1024, note=note)
    common.report(BENCH, "worker idle CPU", w_cpu, "% core", b_cpu, note=note)
    if supervisor is not None:
        (s_rss, s_cpu), (p_rss, p_cpu) = figures[supervisor.pid], figures[bare.pid]
        note = f"after {idle:g} s idle; baseline: bare python holding one Unix socket; goal <= 20 MiB"
        common.report(BENCH, "supervisor RSS", s_rss / 1024, "MiB", p_rss / 1024, note=note)
        common.report(BENCH, "supervisor idle CPU", s_cpu, "% core", p_cpu, note=note)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--no-docker", action="store_true", help="no private dockerd (Docker unreachable)")
    args = parser.parse_args(argv)
    return run(args.idle, not args.no_docker)


if __name__ == "__main__":
    sys.exit(main())
