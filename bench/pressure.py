"""Benchmark 6: `agent.ping` latency while 64 slow commands and 10 live log streams run.

A real worker (subprocess, ``MAX_CONCURRENT_COMMANDS`` 64 + the streams' start calls) uses a
private Docker engine (tests/integration/harness/dockerd.py) where ``--streams`` labelled
service containers each write ``--rate`` log lines per second. ``service.logs.stream.start``
is called for each of them, so container_log events flow to the devserver the whole time;
then 64 ``bench.sleep`` calls fill the command pool, and one `agent.ping` at a time is timed
for ``--seconds``. Baseline, in the same run and on the same worker: the same pings with
nothing else running (before the streams start). Issue 19's goal: p99 <= 20 ms.

    .venv/bin/python -m bench.pressure [--seconds 5] [--slow 64] [--streams 10] [--rate 500]
"""

from bench import common  # noqa: I001  (patches gevent first)

import argparse  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402

BENCH = "pressure"
SETTLE = 3.0
BURST = 50      # lines per shell burst; the container sleeps between bursts to hold --rate


def ping_latencies(lab, uid, seconds):
    def ping():
        if not lab.devserver.call(uid, "agent.ping", {}, timeout=30)["success"]:
            raise RuntimeError("agent.ping failed")
    return common.load_run(ping, 1, seconds)[0]


def start_loggers(daemon, count, rate):
    """``count`` running service containers (service_uid bench-log-<n>) writing ``rate`` lines/s."""
    import docker
    client = docker.DockerClient(base_url=daemon.host, timeout=120)
    image = common.harness().images.build_base_image(client)
    pause_us = int(1_000_000 * BURST / rate)
    script = (f"n=0; while true; do i=0; while [ $i -lt {BURST} ]; do echo \"line $n.$i of a live log stream\"; "
              f"i=$((i+1)); done; n=$((n+1)); usleep {pause_us}; done")
    uids = []
    for index in range(count):
        uid = f"bench-log-{index}"
        labels = {"pulseup.managed": "true", "pulseup.service_uid": uid, "pulseup.lifecycle.version": "1"}
        client.containers.run(image, ["sh", "-c", script], name=f"pulseup-app-{uid}-v0001", labels=labels,
                              detach=True)
        uids.append(uid)
    client.close()
    return uids


def log_lines(lab, uid):
    """Log lines received so far in container_log events (the devserver keeps the last frames)."""
    lines = 0
    for frame in lab.devserver.received_frames(uid):
        if frame.get("type") == "event" and frame.get("event") == "container_log":
            data = frame.get("data") or {}
            if data.get("type") == "log":
                lines += str(data.get("message", "")).count("\n") + 1
    return lines


def busy_pings(lab, uid, seconds, slow, services):
    """Ping latencies with the streams running and ``slow`` sleeps holding the pool."""
    for service_uid in services:
        reply = lab.devserver.call(uid, "service.logs.stream.start", {"service_uid": service_uid, "tail": 0})
        if not reply["success"]:
            raise RuntimeError(f"service.logs.stream.start failed: {reply}")
    hold = seconds + 5.0      # the slow commands outlive the measurement
    sleepers = [gevent.spawn(lab.devserver.call, uid, "bench.sleep", {"seconds": hold}, hold + 30)
                for _ in range(slow)]
    gevent.sleep(1.0)
    lines_before = log_lines(lab, uid)
    busy = ping_latencies(lab, uid, seconds)
    lines = log_lines(lab, uid) - lines_before
    replies = [g.get(timeout=hold + 60) for g in sleepers]
    if not all(r["success"] for r in replies):
        raise RuntimeError(f"slow commands failed: {[r for r in replies if not r['success']][:1]}")
    if services and not lines:
        raise RuntimeError("no container_log event arrived while the streams ran")
    return busy, lines


def run(seconds, slow, streams, rate):
    daemon = common.private_dockerd() if streams else None
    lab = None
    try:
        services = start_loggers(daemon, streams, rate) if streams else []
        lab = common.Lab()
        _proc, uid = lab.start_worker("pressure", max_concurrent_commands=slow + streams,
                                      **({"docker_host": daemon.host} if daemon else {}))
        gevent.sleep(SETTLE)      # the worker's start-up (first samples, proxy re-apply) is not quiet time
        quiet = ping_latencies(lab, uid, seconds)
        busy, lines = busy_pings(lab, uid, seconds, slow, services)
    finally:
        if lab is not None:
            lab.close()
        if daemon is not None:
            daemon.stop()
    note = (f"{slow} slow commands and {streams} live log streams ({rate} lines/s each, "
            f"{lines / (seconds + 0.5):.0f} log lines/s received); baseline: idle worker; goal p99 <= 20 ms")
    for label, fraction in (("p50", 0.5), ("p99", 0.99)):
        common.report(BENCH, f"agent.ping {label} latency under load", 1000 * common.percentile(busy, fraction),
                      "ms", 1000 * common.percentile(quiet, fraction), note=note)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--slow", type=int, default=64)
    parser.add_argument("--streams", type=int, default=10, help="live log streams (0: no Docker engine)")
    parser.add_argument("--rate", type=int, default=500, help="log lines per second per stream")
    args = parser.parse_args(argv)
    return run(args.seconds, args.slow, args.streams, args.rate)


if __name__ == "__main__":
    sys.exit(main())
