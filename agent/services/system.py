"""The host itself: hardware inventory and live figures (psutil and /proc).

``hardware_info()`` gives the HardwareInfo shape of docs/commands.md, "Shapes" (sent at
enrollment, after every authentication and by ``agent.hardware.info``);
``live_stats()`` gives ``server.stats.live`` (docs/commands.md, "Agent commands"). CPU usage comes
from a background sampler (one ``/proc/stat`` read per second) so a stats call
never waits for a sample; ``bench/system_sampling.py`` measures its cost.
"""

import datetime
import ipaddress
import os
import platform
import socket
import threading
import time
import urllib.request

import gevent
import psutil

from agent import log

GIB = 1024 ** 3

# docs/commands.md, "Time and sizes": the architecture vocabulary, from platform.machine() spellings.
ARCH_NAMES = {
    "x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
    "armv6l": "arm", "armv7l": "arm", "armv8l": "arm", "i386": "386", "i686": "386",
    "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64",
}

_log = log.get("system")


def _gib(value):
    return round(value / GIB, 2)


def _utc_now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def busy_percent(before, after):
    """CPU busy share between two ``psutil.cpu_times()`` readings, in percent of all CPUs.

    Same accounting as psutil's ``cpu_percent``: guest time is already inside
    user time on Linux (proc(5)), so it is not counted twice; idle includes iowait.
    """
    def totals(times):
        total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
        idle = times.idle + getattr(times, "iowait", 0.0)
        return total, total - idle
    total_a, busy_a = totals(before)
    total_b, busy_b = totals(after)
    if total_b - total_a <= 0:
        return 0.0
    share = (busy_b - busy_a) / (total_b - total_a)
    return round(min(100.0, max(0.0, share * 100.0)), 1)


class SystemService:
    """Hardware inventory and live host statistics."""

    PUBLIC_IP_TTL = 3600.0          # docs/commands.md, "Agent commands": cached 1 h
    PUBLIC_IP_RETRY = 300.0         # a failed lookup is retried after 5 min, not per call
    PUBLIC_IP_TIMEOUT = 2.0         # docs/commands.md, "Shapes" (HardwareInfo)

    def __init__(self, cfg, sample_interval=1.0):
        self.cfg = cfg
        self.sample_interval = sample_interval
        self._cpu_percent = None
        self._sampler = None
        self._public_ip = ("unknown", 0.0)     # (value, monotonic expiry)
        self._public_ip_lock = threading.Lock()

    # -- live statistics -------------------------------------------------------------

    def start(self, services):
        """Start the 1 s CPU sampler as a greenlet owned by ``services``."""
        if self._sampler is None:
            self._sampler = services.spawn("system.cpu_sampler", self._sample_loop)
        return self._sampler

    def _sample_loop(self):
        last = psutil.cpu_times()
        while True:
            gevent.sleep(self.sample_interval)
            now = psutil.cpu_times()
            self._cpu_percent = busy_percent(last, now)
            last = now

    def cpu_percent(self):
        """Last sampled CPU usage; the average since boot until the sampler's first tick."""
        if self._cpu_percent is None:
            now = psutil.cpu_times()
            return busy_percent(now._make([0.0] * len(now)), now)
        return self._cpu_percent

    def live_stats(self):
        """The ``server.stats.live`` reply; never blocks for a sample. Raises OSError only
        if /proc is unreadable."""
        memory = psutil.virtual_memory()
        disk = psutil.disk_usage("/")
        received, sent = network_totals()
        load = os.getloadavg()
        return {
            "cpu_percent": self.cpu_percent(),
            "memory_used_gb": _gib(memory.total - memory.available),
            "memory_total_gb": _gib(memory.total),
            "memory_usage_percent": memory.percent,
            "disk_used_gb": _gib(disk.used),
            "disk_total_gb": _gib(disk.total),
            "disk_usage_percent": disk.percent,
            "network_bytes_in": received,
            "network_bytes_out": sent,
            "uptime_seconds": int(host_uptime()),
            "load_avg_1": round(load[0], 2),
            "load_avg_5": round(load[1], 2),
            "load_avg_15": round(load[2], 2),
            "timestamp": _utc_now(),
        }

    # -- hardware inventory ----------------------------------------------------------

    def hardware_info(self):
        """The HardwareInfo object (docs/commands.md, "Shapes": cores = physical cores).
        Blocks up to 2 s when the public-IP lookup is on; raises OSError only if /proc is unreadable."""
        logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
        physical = psutil.cpu_count(logical=False) or logical
        memory_total = psutil.virtual_memory().total
        storage_total = psutil.disk_usage("/").total
        info = {
            "cpu": {"model": cpu_model(), "cores": physical, "arch": cpu_arch()},
            "memory": {"total": memory_total},
            "storage": {"total": storage_total, "type": storage_type("/")},
            "network": {"interfaces": network_interfaces()},
            "os": os_info(),
            "hostname": socket.gethostname(),
            "public_ip": self.public_ip(),
            "cpu_physical_cores": physical,
            "cpu_logical_count": logical,
            "total_memory_gb": _gib(memory_total),
            "storage_total_gb": _gib(storage_total),
        }
        primary = primary_ip()
        if primary:
            info["primary_ip"] = primary
        return info

    @staticmethod
    def register_payload(info):
        """The ``register_hardware_info`` event from a HardwareInfo (docs/protocol.md, "Outbound events"): flat
        fields, with the HardwareInfo itself (plus ``default_name``) as ``metadata``."""
        return {
            "hostname": info["hostname"], "default_name": info["hostname"],
            "ip_address": info["public_ip"], "private_ip": info.get("primary_ip", "unknown"),
            "cpu_model": info["cpu"]["model"], "cpu_arch": info["cpu"]["arch"],
            "cpu_cores": info["cpu_physical_cores"], "cpu_count": info["cpu_logical_count"],
            "ram_gb": round(info["total_memory_gb"], 2), "storage_gb": round(info["storage_total_gb"], 2),
            "os_name": info["os"]["name"], "os_version": info["os"]["version"],
            "kernel_version": info["os"]["kernel"],
            "metadata": dict(info, default_name=info["hostname"]), "collected_at": _utc_now(),
        }

    def public_ip(self):
        """The host's public address from PULSEUP_PUBLIC_IP_LOOKUP_URL, or "unknown".

        Off unless PULSEUP_PUBLIC_IP_LOOKUP (docs/commands.md, "Shapes"). Never raises.
        """
        if not self.cfg.pulseup_public_ip_lookup:
            return "unknown"
        with self._public_ip_lock:
            value, expiry = self._public_ip
            if time.monotonic() < expiry:
                return value
            value = self._lookup_public_ip()
            ttl = self.PUBLIC_IP_TTL if value != "unknown" else self.PUBLIC_IP_RETRY
            self._public_ip = (value, time.monotonic() + ttl)
            return value

    def _lookup_public_ip(self):
        url = self.cfg.pulseup_public_ip_lookup_url
        request = urllib.request.Request(url, headers={"Accept": "text/plain"})
        try:
            # gevent.Timeout bounds the whole exchange; urlopen's timeout is per socket call.
            with gevent.Timeout(self.PUBLIC_IP_TIMEOUT):
                with urllib.request.urlopen(request, timeout=self.PUBLIC_IP_TIMEOUT) as response:
                    body = response.read(64)
            return str(ipaddress.ip_address(body.decode("ascii").strip()))
        except (gevent.Timeout, OSError, ValueError, UnicodeError) as exc:
            _log.warning("public IP lookup failed: %s", exc.__class__.__name__)
            return "unknown"


# -- host facts (module functions so the benchmark and tests can call them alone) ---------

def cpu_model():
    """The CPU model name from /proc/cpuinfo (x86 "model name", ARM "Model"/"Hardware")."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_arch():
    machine = platform.machine().lower()
    return ARCH_NAMES.get(machine, machine or "unknown")


def storage_type(path):
    """"ssd" or "hdd" from the rotational flag of the block device holding ``path``;
    "unknown" for overlay, network or virtual file systems."""
    device = os.stat(path).st_dev
    sys_dir = f"/sys/dev/block/{os.major(device)}:{os.minor(device)}"
    for candidate in (sys_dir, os.path.join(sys_dir, "..")):   # a partition's queue/ is its disk's
        try:
            with open(os.path.join(candidate, "queue", "rotational"), encoding="ascii") as handle:
                return "hdd" if handle.read().strip() == "1" else "ssd"
        except OSError:
            continue
    return "unknown"


def network_interfaces():
    """[{name, ip (CIDR), mac}] for every address of every non-loopback interface
    (IPv6 link-local addresses left out: they are the same on every host's link)."""
    result = []
    for name, addresses in sorted(psutil.net_if_addrs().items()):
        mac = next((a.address for a in addresses if a.family == psutil.AF_LINK), "")
        for address in addresses:
            if address.family not in (socket.AF_INET, socket.AF_INET6) or not address.netmask:
                continue
            # psutil gives IPv6 masks as addresses (ffff:ffff::), which ip_interface refuses
            prefix = bin(int(ipaddress.ip_address(address.netmask))).count("1")
            ip = ipaddress.ip_interface(f"{address.address.split('%')[0]}/{prefix}")
            if ip.is_loopback or ip.ip.is_link_local and ip.version == 6:
                continue
            result.append({"name": name, "ip": ip.with_prefixlen, "mac": mac})
    return result


def primary_ip():
    """The first IPv4 address of the interface holding the default route (/proc/net/route),
    found without sending anything; None when there is no default route."""
    try:
        with open("/proc/net/route", encoding="ascii") as handle:
            rows = [line.split() for line in handle.readlines()[1:]]
    except OSError:
        return None
    defaults = sorted((int(row[6]), row[0]) for row in rows if len(row) > 7 and row[1] == "00000000")
    for _, name in defaults:
        for address in psutil.net_if_addrs().get(name, ()):
            if address.family == socket.AF_INET:
                return address.address
    return None


def os_info():
    try:
        release = platform.freedesktop_os_release()
    except OSError:
        release = {}
    return {"name": release.get("NAME", platform.system()), "version": release.get("VERSION_ID", ""),
            "kernel": platform.release()}


def network_totals():
    """(bytes received, bytes sent) summed over interfaces, loopback excluded."""
    received = sent = 0
    for name, counters in psutil.net_io_counters(pernic=True).items():
        if name != "lo":
            received += counters.bytes_recv
            sent += counters.bytes_sent
    return received, sent


def host_uptime():
    """Seconds since boot from /proc/uptime (immune to wall-clock steps)."""
    try:
        with open("/proc/uptime", encoding="ascii") as handle:
            return float(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return time.time() - psutil.boot_time()
