"""Service log streaming throughput against a raw `docker logs` read, measured in the same run.

Starts a private dockerd (the integration harness), runs a container that writes --lines
numbered lines to stdout and stderr alternately, waits until the engine has them all, then times:

  baseline-cli   `docker logs <id>` into /dev/null (the docker CLI; its demultiplexing in Go)
  baseline-sdk   the raw HTTP body of GET /containers/<id>/logs read through the docker SDK
  agent          LogStreams (the `service.logs.stream.start` path): frames parsed, lines
                 batched into container_log events of <= 64 KiB, checked for order

and prints seconds, lines/s, the ratio to the baseline and the worker's RSS growth.
Run as root on the test machine:  .venv/bin/python bench/log_stream.py --lines 300000
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import psutil  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests", "integration")]

from harness import DockerDaemon  # noqa: E402
from harness.images import build_base_image  # noqa: E402

from agent import config  # noqa: E402
from agent.services import Services  # noqa: E402
from agent.services.app.log_streams import LogStreams  # noqa: E402

UID = "bench"
LABELS = {"pulseup.managed": "true", "pulseup.service_uid": UID, "pulseup.lifecycle.version": "1"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=300_000, help="log lines, even (default 300000)")
    parser.add_argument("--runs", type=int, default=3, help="repetitions per variant (best is kept)")
    args = parser.parse_args()
    args.lines += args.lines % 2     # the container writes them in stdout/stderr pairs
    daemon = DockerDaemon().start()
    try:
        run(daemon, args)
    finally:
        daemon.stop()


def run(daemon, args):
    import docker

    client = docker.DockerClient(base_url=daemon.host, timeout=600)
    image = build_base_image(client)
    script = (f"i=1; while [ $i -le {args.lines} ]; do echo $i; i=$((i+1)); echo $i >&2; i=$((i+1)); done; "
              "exec sleep 3600")
    container = client.containers.run(image, ["sh", "-c", script], name=f"pulseup-app-{UID}-v0001",
                                      labels=LABELS, detach=True)
    wait_for_output(client, container, args.lines)
    cli = shutil.which("docker")
    results = {}
    if cli:
        results["baseline-cli"] = best(args.runs, lambda: time_cli(cli, daemon.host, container.id))
    results["baseline-sdk"] = best(args.runs, lambda: time_sdk(client, container.id))
    services = Services(config.defaults().replace(docker_host=daemon.host))
    results["agent"] = best(args.runs, lambda: time_agent(services, args.lines))
    baseline = results.get("baseline-cli") or results["baseline-sdk"]
    for label, (elapsed, rss) in results.items():
        print(f"{label:14s} {elapsed:7.3f} s  {args.lines / elapsed:10.0f} lines/s  "
              f"x{elapsed / baseline[0]:.2f} of baseline time  RSS +{rss / 2**20:.1f} MiB", flush=True)
    report_rows(args, results)
    services.close()
    container.remove(force=True)
    client.close()


def report_rows(args, results):
    """RESULT rows for bench/run.py (issue 19: lines/s >= 0.8x the SDK's raw read, RSS <= +5 MB)."""
    from bench.common import report
    rate = {label: args.lines / elapsed for label, (elapsed, _rss) in results.items()}
    note = f"{args.lines} lines, best of {args.runs}; goal >= 0.8x"
    report("log_stream", "lines/s vs SDK raw read", rate["agent"], "lines/s", rate["baseline-sdk"],
           note=note + "; baseline: raw HTTP body of /logs through the docker SDK")
    if "baseline-cli" in rate:
        report("log_stream", "lines/s vs docker logs (CLI)", rate["agent"], "lines/s", rate["baseline-cli"],
               note=note + "; baseline: docker logs > /dev/null")
    report("log_stream", "RSS growth while streaming", results["agent"][1] / 2**20, "MiB",
           note="peak RSS minus RSS before the stream; goal <= 5 MB")


def wait_for_output(client, container, lines):
    started = time.monotonic()
    # the last line goes to stderr, but the engine copies stdout and stderr separately: the last
    # few entries of the log may all be stdout's (and tail applies before a stream filter)
    while str(lines).encode() not in client.api.logs(container.id, tail=200).split():
        if time.monotonic() - started > 300:
            container.reload()
            raise SystemExit(f"the container did not write its lines in 300 s: {container.status}, "
                             f"last lines {client.api.logs(container.id, tail=4)!r}")
        time.sleep(0.2)
    print(f"{lines} lines written in {time.monotonic() - started:.1f} s")


def best(runs, func):
    """(shortest time, largest RSS growth) of ``runs`` runs: the first run grows the most."""
    results = [func() for _ in range(runs)]
    return min(elapsed for elapsed, _ in results), max(rss for _, rss in results)


def time_cli(cli, host, container_id):
    started = time.monotonic()
    subprocess.run([cli, "-H", host, "logs", container_id], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True, timeout=600)
    return time.monotonic() - started, 0


def time_sdk(client, container_id):
    api = client.api
    started = time.monotonic()
    response = api.get(f"{api.base_url}/v{api.api_version}/containers/{container_id}/logs",
                       params={"stdout": 1, "stderr": 1, "tail": "all"}, stream=True)
    for _chunk in response.iter_content(chunk_size=None):
        pass
    response.close()
    return time.monotonic() - started, 0


class CountingSink:
    def __init__(self):
        self.count = 0

    def emit(self, event, data):
        if event == "container_log" and data["type"] == "log":
            self.count += data["message"].count("\n") + 1


def time_agent(services, lines):
    process = psutil.Process()
    sink = CountingSink()
    services.events = sink
    streams = LogStreams(services)
    baseline = peak = process.memory_info().rss
    started = time.monotonic()
    streams.start(UID, tail="all")
    while sink.count < lines:
        peak = max(peak, process.memory_info().rss)
        gevent.sleep(0.01)
        if time.monotonic() - started > 300:
            raise SystemExit(f"only {sink.count} of {lines} lines arrived in 300 s")
    elapsed = time.monotonic() - started
    streams.stop(UID)
    return elapsed, peak - baseline


if __name__ == "__main__":
    main()
