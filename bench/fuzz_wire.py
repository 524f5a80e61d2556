"""The long wire-level fuzz run (issue 16): tests/resilience/test_fuzz_wire.py with
PULSEUP_FUZZ_WIRE_CASES examples (default 5,000; the suite's `ci` run uses 300). Prints the
number of frames sent to a real worker process and the rate; needs root (the worker runs as
nobody) and the services of the fault tests (a private dockerd, git).

    .venv/bin/python bench/fuzz_wire.py [CASES]
"""

import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    cases = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    env = dict(os.environ, PULSEUP_FUZZ_WIRE_CASES=str(cases), PYTHONPATH=ROOT)
    started = time.monotonic()
    code = subprocess.call([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                            "tests/resilience/test_fuzz_wire.py"], cwd=ROOT, env=env)
    elapsed = time.monotonic() - started
    print(f"wire fuzz: {cases} frames to a real worker, each followed by agent.ping: "
          f"{'passed' if code == 0 else 'FAILED'} in {elapsed:.0f} s ({cases / elapsed:.0f} frames/s)")
    sys.exit(code)


if __name__ == "__main__":
    main()
