"""Backup throughput against `pg_dump | zstd -3`, measured in the same run (the 1 GB
run of docs/design.md, "Test sizes"; real numbers live in bench/, not in timing asserts).

Starts a private dockerd (the integration harness), deploys the PostgreSQL stand-in through
the agent's DatabaseService, generates --size-mb of table data server-side, then times:

  baseline   docker exec ... pg_dump -Fc --compress=0 | zstd -3 > file   (the CLI and zstd(1))
  agent      DatabaseService.backup (zstd level 3, python-zstandard off the hub)
  agent-gz   the same with compression=gzip (level 6), with --gzip

in --runs interleaved rounds (3 by default, issue 19: the median of 3), and prints the median
seconds, MiB/s, the ratio to the baseline and the largest RSS growth of the agent.
Run as root on the test machine:  .venv/bin/python bench/backup_throughput.py --size-mb 1024
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import psutil  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests", "integration"), os.path.join(ROOT, "tests", "integration", "db")]

import dbimages  # noqa: E402
from harness import DockerDaemon  # noqa: E402
from harness.images import build_base_image  # noqa: E402

from agent import config  # noqa: E402
from agent.services.context import CallContext  # noqa: E402
from agent.services import Services  # noqa: E402
from agent.services.backups.pipeline import BackupJob  # noqa: E402
from agent.services.database.provision import DeployRequest  # noqa: E402

UID = "bench"
PASSWORD = "bench-password"
BYTES_PER_ROW = 265  # id + repeat(md5, 8) in pg_dump's custom format, measured


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="uncompressed dump size (default 1024)")
    parser.add_argument("--runs", type=int, default=3, help="rounds of the variants (the median is kept)")
    parser.add_argument("--gzip", action="store_true", help="also time the agent with gzip (level 6)")
    args = parser.parse_args()
    daemon = DockerDaemon().start()
    work = tempfile.mkdtemp(prefix="pulseup-bench-")
    try:
        run(daemon, work, args)
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)


def run(daemon, work, args):
    import docker

    client = docker.DockerClient(base_url=daemon.host, timeout=600)
    image = dbimages.postgres_image(client)
    build_base_image(client)
    cfg = config.defaults().replace(docker_host=daemon.host, pulseup_backup_dir=os.path.join(work, "backups"),
                                    db_image_postgresql=image, db_image_pull="never")
    services = Services(cfg)
    ctx = CallContext(services, "bench", emit=lambda *a: None)
    services.database.deploy(ctx, DeployRequest(UID, "postgresql", PASSWORD))
    rows = args.size_mb * 2 ** 20 // BYTES_PER_ROW
    started = time.monotonic()
    client.containers.get(f"pulseup-db-{UID}").exec_run(
        ["psql", "-U", "admin", "-d", "app", "-qc",
         f"CREATE UNLOGGED TABLE big AS SELECT g AS id, repeat(md5(g::text), 8) AS v FROM generate_series(1, {rows}) g"])
    print(f"generated {rows} rows in {time.monotonic() - started:.1f} s")
    variants = [("baseline pg_dump | zstd -3", lambda: time_baseline(daemon.host, work)),
                ("agent zstd", lambda: time_agent(services, "zstd"))]
    if args.gzip:
        variants.append(("agent gzip", lambda: time_agent(services, "gzip")))
    results = interleaved(args.runs, variants)
    baseline = results["baseline pg_dump | zstd -3"]
    for label, result in results.items():
        report(label, result, baseline)
    report_rows(args, results)
    services.close()
    client.close()


def interleaved(runs, variants):
    """{label: (median time, size, largest RSS growth)}: the variants take turns, ``runs`` rounds,
    so a busy moment of the shared machine does not land on one side only."""
    samples = {label: [] for label, _ in variants}
    for round_ in range(runs):
        for label, func in variants:
            samples[label].append(func())
            print(f"  round {round_ + 1} {label}: {samples[label][-1][0]:.2f} s", flush=True)
    return {label: (statistics.median(r[0] for r in rows), rows[0][1], max(r[2] for r in rows))
            for label, rows in samples.items()}


def report_rows(args, results):
    """RESULT rows for bench/run.py (issue 19: <= 1.05x the time, RSS growth <= 30 MB)."""
    from bench.common import report as result_row
    base = results["baseline pg_dump | zstd -3"]
    note = f"{args.size_mb} MiB dump, median of {args.runs}; baseline: docker exec pg_dump | zstd -3"
    result_row("backup", "zstd backup time", results["agent zstd"][0], "s", base[0], note=note + "; goal <= 1.05x")
    result_row("backup", "RSS growth during the backup", results["agent zstd"][2] / 2**20, "MiB",
               note="peak RSS minus RSS before, largest of the runs; goal <= 30 MB")


def time_baseline(host, work):
    target = os.path.join(work, "baseline.dump.zst")
    script = ('PGPASSWORD="$POSTGRES_PASSWORD" pg_dump -U "$POSTGRES_USER" -d app --format=custom --compress=0')
    docker_cli = shutil.which("docker")
    started = time.monotonic()
    subprocess.run(f"{docker_cli} -H {host} exec pulseup-db-{UID} sh -c '{script}' | zstd -3 -q -o {target} -f",
                   shell=True, check=True, timeout=3600)
    elapsed = time.monotonic() - started
    size = int(subprocess.run(f"zstd -dc {target} | wc -c", shell=True, check=True, capture_output=True,
                              text=True).stdout)
    os.unlink(target)
    return elapsed, size, 0


def time_agent(services, compression):
    proc = psutil.Process()
    baseline = peak = proc.memory_info().rss

    def sample():
        nonlocal peak
        while True:
            peak = max(peak, proc.memory_info().rss)
            gevent.sleep(0.05)

    sampler = gevent.spawn(sample)
    ctx = CallContext(services, "bench", emit=lambda *a: None)
    started = time.monotonic()
    try:
        result = services.backups.create(ctx, BackupJob(UID, f"b-{time.time_ns()}", compression=compression))
    finally:
        sampler.kill()
    elapsed = time.monotonic() - started
    os.unlink(result["backup_path"])
    os.unlink(result["manifest_path"])
    return elapsed, result["size"], peak - baseline


def report(label, result, baseline):
    elapsed, size, rss = result
    print(f"{label:30s} {elapsed:7.2f} s  {size / elapsed / 2**20:7.1f} MiB/s  "
          f"x{elapsed / baseline[0]:.2f} of baseline time  RSS +{rss / 2**20:.1f} MiB", flush=True)


if __name__ == "__main__":
    main()
