"""Run every benchmark present in bench/, print one table, write bench/results.json.

    .venv/bin/python -m bench.run            # or: .venv/bin/python bench/run.py
    .venv/bin/python -m bench.run --only roundtrip,pressure

Each benchmark runs as a subprocess in its own session with a time limit (the whole group
is killed on expiry, workers included). The modules of this package print ``RESULT {json}``
lines (bench.common.report): those become table rows with value, baseline and ratio. Other
engineers' scripts in bench/ (devserver_load.py, system_sampling.py, log_stream.py,
backup_throughput.py...) are run as they are; their output is kept verbatim in the JSON and
shown below the table.
"""

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULT_PREFIX = "RESULT "
OWN = ("roundtrip", "pressure", "reconnect", "footprint")   # fastest first
NOT_BENCHMARKS = {"__init__", "run", "common", "fuzz_wire"} | set(OWN)   # fuzz_wire: run on its own
TIME_LIMIT = 180.0
# footprint: 60 s idle after authentication plus a private dockerd (issue 19); backup: 1 GB
# through pg_dump six times (3 rounds of baseline and agent, median) plus its private dockerd,
# ~100 s on a quiet machine, several minutes when the machine is shared; it runs last so a
# busy machine cuts only that one
TIME_LIMITS = {"footprint": 120.0, "pressure": 120.0, "backup_throughput": 330.0}
LAST = ("backup_throughput",)
BUDGET = 570.0      # the whole run stays under 10 minutes (issue 13)


def discover():
    """(name, argv) of every benchmark: ours as modules, the other scripts as files."""
    found = [(name, [sys.executable, "-m", f"bench.{name}"]) for name in OWN
             if os.path.exists(os.path.join(HERE, f"{name}.py"))]
    for entry in sorted(os.listdir(HERE), key=lambda entry: (os.path.splitext(entry)[0] in LAST, entry)):
        name, ext = os.path.splitext(entry)
        if ext == ".py" and name not in NOT_BENCHMARKS:
            found.append((name, [sys.executable, os.path.join(HERE, entry)]))
    return found


def run_one(name, argv, limit):
    """Run one benchmark; its record for results.json."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=limit)
        status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)      # the benchmark's workers and servers too
        output, _ = proc.communicate()
        status = f"timed out after {limit:g} s"
    results, lines = [], []
    for line in output.splitlines():
        if line.startswith(RESULT_PREFIX):
            results.append(json.loads(line[len(RESULT_PREFIX):]))
        else:
            lines.append(line)
    return {"name": name, "status": status, "seconds": round(time.monotonic() - started, 1),
            "results": results, "output": lines[-60:]}


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    return {"hostname": platform.node(), "cpu": cpu, "cores": os.cpu_count(),
            "kernel": platform.release(), "python": platform.python_version(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)}


def _number(value):
    if value is None:
        return "-"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def table(records):
    rows = [("benchmark", "metric", "value", "unit", "baseline", "ratio")]
    for record in records:
        for r in record["results"]:
            rows.append((r["bench"], r["metric"], _number(r["value"]), r["unit"], _number(r["baseline"]),
                         "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"))
        if not record["results"]:
            rows.append((record["name"], "(own output below)", "", "", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines = [" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(summary):
    """The table as markdown rows (for the README), with the date and the machine."""
    m = summary["machine"]
    lines = [f"Measured {summary['date']} on {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB, "
             f"Linux {m['kernel']}, Python {m['python']}); bench/run.py, {summary['total_seconds']} s.", "",
             "| benchmark | metric | value | unit | baseline | ratio | note |", "|---|---|---|---|---|---|---|"]
    for record in summary["benchmarks"]:
        for r in record["results"]:
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
            lines.append(f"| {r['bench']} | {r['metric']} | {_number(r['value'])} | {r['unit']} | "
                         f"{_number(r['baseline'])} | {ratio} | {r['note'].replace('|', '/')} |")
        if record["status"] != "ok" or not record["results"]:
            lines.append(f"| {record['name']} | ({record['status']}, own output in results.json) | | | | | |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated benchmark names")
    parser.add_argument("--time-limit", type=float, default=None,
                        help=f"seconds per benchmark (default {TIME_LIMIT:g}, more for a few)")
    parser.add_argument("--budget", type=float, default=BUDGET, help="seconds for the whole run")
    parser.add_argument("--markdown", action="store_true", help="also print the table as markdown rows")
    parser.add_argument("--output", default=os.path.join(HERE, "results.json"))
    args = parser.parse_args(argv)
    wanted = set(args.only.split(",")) if args.only else None
    started = time.monotonic()
    records = []
    for name, command in discover():
        if wanted is None or name in wanted:
            limit = args.time_limit or TIME_LIMITS.get(name, TIME_LIMIT)
            limit = min(limit, max(10.0, args.budget - (time.monotonic() - started)))
            print(f"== {name} (time limit {limit:.0f} s)", flush=True)
            records.append(run_one(name, command, limit))
            print(f"   {records[-1]['status']} in {records[-1]['seconds']} s", flush=True)
    summary = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "machine": machine(), "total_seconds": round(time.monotonic() - started, 1),
               "benchmarks": records}
    with open(args.output, "w") as handle:
        json.dump(summary, handle, indent=2)
    print()
    print(table(records))
    for record in records:
        if not record["results"] or record["status"] != "ok":
            print(f"\n== {record['name']} ({record['status']}):\n" + "\n".join(record["output"]))
    if args.markdown:
        print("\n" + markdown(summary))
    print(f"\n{summary['date']} on {summary['machine']['cpu']} ({summary['machine']['cores']} cores); "
          f"total {summary['total_seconds']} s; written to {args.output}")
    return 0 if all(r["status"] == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
