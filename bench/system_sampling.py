"""Cost of host sampling: the 1 s CPU sampler plus a server.stats.live poll every 5 s.

Prints the CPU time of each piece against a baseline measured in the same run
(one plain read of /proc/stat, the least any CPU sampler can do) and the share
of one core used at the designed rates. Budget (issue "Identity..."): < 0.5 % of
a core. Exits 1 when over budget.

    .venv/bin/python bench/system_sampling.py [iterations]
"""

import sys
import time

import psutil

from agent import config
from agent.services.system import SystemService, busy_percent

SAMPLER_HZ = 1.0        # the background CPU sampler
POLL_HZ = 1.0 / 5.0     # the control plane polling server.stats.live every 5 s
BUDGET = 0.005          # of one core


def cpu_seconds_per_call(func, iterations):
    func()                                   # warm caches and imports
    start = time.process_time()
    for _ in range(iterations):
        func()
    return (time.process_time() - start) / iterations


def read_proc_stat():
    with open("/proc/stat", "rb") as handle:
        handle.read()


def main(iterations=2000):
    service = SystemService(config.defaults())
    last = [psutil.cpu_times()]

    def sampler_tick():
        now = psutil.cpu_times()
        busy_percent(last[0], now)
        last[0] = now

    baseline = cpu_seconds_per_call(read_proc_stat, iterations)
    tick = cpu_seconds_per_call(sampler_tick, iterations)
    stats = cpu_seconds_per_call(service.live_stats, iterations)
    hardware = cpu_seconds_per_call(service.hardware_info, max(1, iterations // 10))
    share = tick * SAMPLER_HZ + stats * POLL_HZ
    print(f"baseline /proc/stat read   {baseline * 1e6:8.1f} us/call")
    print(f"sampler tick               {tick * 1e6:8.1f} us/call  ({tick / baseline:5.1f}x baseline)")
    print(f"server.stats.live          {stats * 1e6:8.1f} us/call  ({stats / baseline:5.1f}x baseline)")
    print(f"agent.hardware.info        {hardware * 1e6:8.1f} us/call  ({hardware / baseline:5.1f}x baseline)")
    print(f"load at 1 Hz sampling + a poll every 5 s: {share * 100:.4f} % of one core "
          f"(budget {BUDGET * 100:.1f} %, {BUDGET / share:.0f}x headroom)")
    return 0 if share < BUDGET else 1


if __name__ == "__main__":
    sys.exit(main(*(int(arg) for arg in sys.argv[1:])))
