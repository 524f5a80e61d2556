"""Benchmark 6: `agent.ping` latency while 64 slow commands run.

A real worker (subprocess, ``MAX_CONCURRENT_COMMANDS`` 64) gets 64 ``bench.sleep`` calls that
fill its command pool for the whole measurement; meanwhile one `agent.ping` at a time is
timed for ``--seconds``. Baseline, in the same run and on the same worker: the same pings
with nothing else running. The issue's 10 concurrent log streams are omitted: they need the
container engineer's streaming and a Docker engine, which this cross-cutting bench does not
start (bench/log_stream.py, when present, measures streaming on its own).

    .venv/bin/python -m bench.pressure [--seconds 5] [--slow 64]
"""

from bench import common  # noqa: I001  (patches gevent first)

import argparse  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402

BENCH = "pressure"


def ping_latencies(lab, uid, seconds):
    def ping():
        if not lab.devserver.call(uid, "agent.ping", {}, timeout=30)["success"]:
            raise RuntimeError("agent.ping failed")
    return common.load_run(ping, 1, seconds)[0]


def run(seconds, slow):
    lab = common.Lab()
    try:
        _proc, uid = lab.start_worker("pressure", max_concurrent_commands=slow)
        quiet = ping_latencies(lab, uid, seconds)
        hold = seconds + 5.0      # the slow commands outlive the measurement
        sleepers = [gevent.spawn(lab.devserver.call, uid, "bench.sleep", {"seconds": hold}, hold + 30)
                    for _ in range(slow)]
        gevent.sleep(0.5)
        busy = ping_latencies(lab, uid, seconds)
        replies = [g.get(timeout=hold + 60) for g in sleepers]
    finally:
        lab.close()
    if not all(r["success"] for r in replies):
        raise RuntimeError(f"slow commands failed: {[r for r in replies if not r['success']][:1]}")
    note = f"{slow} slow commands running; baseline: idle worker"
    for label, fraction in (("p50", 0.5), ("p99", 0.99)):
        common.report(BENCH, f"agent.ping {label} latency under load", 1000 * common.percentile(busy, fraction),
                      "ms", 1000 * common.percentile(quiet, fraction), note=note)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--slow", type=int, default=64)
    args = parser.parse_args(argv)
    return run(args.seconds, args.slow)


if __name__ == "__main__":
    sys.exit(main())
