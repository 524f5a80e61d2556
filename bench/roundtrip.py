"""Benchmark 1: `agent.ping` round trip through the full stack vs a bare WebSocket echo.

Full stack: the devserver in this process sends `call agent.ping` to a real worker in a
subprocess (TLS, authenticated session, envelope decode, dispatcher, outbox journal, sender)
and waits for the `response`. Baseline, in the same run: a bare websocket-client sending
JSON frames to a minimal TLS echo server (gevent + wsproto) in a subprocess: also two
processes, one TLS WebSocket, JSON correlated by id. Both measured with 1 and 64 calls in
flight for ``--seconds`` each: p50 / p99 latency and calls/s.

    .venv/bin/python -m bench.roundtrip [--seconds 5]
"""

from bench import common  # noqa: I001  (patches gevent first)

import argparse  # noqa: E402
import sys  # noqa: E402

BENCH = "roundtrip"
IN_FLIGHT = (1, 64)


def measure_bare(work, seconds):
    proc, url, ca_file = common.start_echo_process(work)
    client = common.BareClient(url, ca_file)
    try:
        return {n: common.load_run(lambda: client.call({"n": 1}), n, seconds) for n in IN_FLIGHT}
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


def measure_agent(lab, seconds):
    proc, uid = lab.start_worker("roundtrip")

    def ping():
        reply = lab.devserver.call(uid, "agent.ping", {"n": 1}, timeout=30)
        if not reply["success"]:
            raise RuntimeError(f"agent.ping failed: {reply}")
    return {n: common.load_run(ping, n, seconds) for n in IN_FLIGHT}


def run(seconds):
    lab = common.Lab()
    try:
        bare = measure_bare(lab.work, seconds)
        agent = measure_agent(lab, seconds)
    finally:
        lab.close()
    for n in IN_FLIGHT:
        (lat, rate), (base_lat, base_rate) = agent[n], bare[n]
        for label, fraction in (("p50", 0.5), ("p99", 0.99)):
            common.report(BENCH, f"agent.ping {label} latency, {n} in flight",
                          1000 * common.percentile(lat, fraction), "ms",
                          1000 * common.percentile(base_lat, fraction), note="baseline: bare ws echo")
        common.report(BENCH, f"agent.ping calls/s, {n} in flight", rate, "calls/s", base_rate,
                      note="baseline: bare ws echo")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    return run(args.seconds)


if __name__ == "__main__":
    sys.exit(main())
