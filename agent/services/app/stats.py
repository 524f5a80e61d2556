"""ContainerMetrics (docs/commands.md, "Shapes") from one Docker stats sample.

The figures follow the docker CLI's ``docker stats`` (cli/command/container/stats_helpers.go):
CPU % is the two-sample formula over ``precpu_stats``; memory usage excludes the page cache
(``total_inactive_file`` on cgroup v1, ``inactive_file`` on v2); cgroup v2 reports ``file``
and ``anon`` where v1 has ``cache`` and ``rss``.
"""

import time

from agent.services.docker import (
    MANAGED, health_of, labels_of, parse_docker_time, state_of, status_of, translate)
from agent.values import rfc3339


def sample(docker, container):
    """One stats sample of ``container`` as ContainerMetrics; raises AgentError.

    Docker answers a non-streaming request after two internal reads (about 1 s) so that
    ``precpu_stats`` is filled.
    """
    with translate(f"stats of {container.name}"):
        stats = docker.api.stats(container.id, stream=False)
        container.reload()
    return metrics(container.attrs, stats)


def cpu_figures(stats, host_config=None):
    """{usage (%), throttled (periods), limit (cores)} from a stats sample."""
    cpu, pre = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    usage = (cpu.get("cpu_usage") or {})
    online = cpu.get("online_cpus") or len(usage.get("percpu_usage") or ()) or 1
    cpu_delta = usage.get("total_usage", 0) - (pre.get("cpu_usage") or {}).get("total_usage", 0)
    system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    percent = cpu_delta / system_delta * online * 100.0 if cpu_delta > 0 and system_delta > 0 else 0.0
    return {
        "usage": round(percent, 3),
        "throttled": (cpu.get("throttling_data") or {}).get("throttled_periods", 0),
        "limit": _cpu_limit(host_config or {}, online),
    }


def _cpu_limit(host_config, online):
    if host_config.get("NanoCpus"):
        return host_config["NanoCpus"] / 1e9
    quota, period = host_config.get("CpuQuota") or 0, host_config.get("CpuPeriod") or 0
    if quota > 0 and period > 0:
        return quota / period
    return float(online)


def memory_figures(stats):
    """{usage, limit, percent, cache, rss} for cgroup v1 or v2."""
    memory = stats.get("memory_stats") or {}
    detail = memory.get("stats") or {}
    v2 = "anon" in detail or "file" in detail
    if v2:
        inactive, cache, rss = detail.get("inactive_file", 0), detail.get("file", 0), detail.get("anon", 0)
    else:
        inactive = detail.get("total_inactive_file", detail.get("inactive_file", 0))
        cache = detail.get("cache", detail.get("total_cache", 0))
        rss = detail.get("rss", detail.get("total_rss", 0))
    raw = memory.get("usage", 0)
    usage = raw - inactive if inactive < raw else raw
    limit = memory.get("limit", 0)
    return {"usage": usage, "limit": limit,
            "percent": round(usage / limit * 100.0, 3) if limit else 0.0,
            "cache": cache, "rss": rss}


def network_figures(stats):
    """Counters summed over every interface."""
    keys = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_errors", "tx_errors")
    totals = dict.fromkeys(keys, 0)
    for interface in (stats.get("networks") or {}).values():
        for key in keys:
            totals[key] += interface.get(key, 0)
    return totals


def disk_figures(stats):
    """Block I/O bytes and operations (v1 says ``Read``, v2 ``read``; v2 has no op counts)."""
    blkio = stats.get("blkio_stats") or {}
    return {
        "read_bytes": _blkio_sum(blkio.get("io_service_bytes_recursive"), "read"),
        "write_bytes": _blkio_sum(blkio.get("io_service_bytes_recursive"), "write"),
        "read_ops": _blkio_sum(blkio.get("io_serviced_recursive"), "read"),
        "write_ops": _blkio_sum(blkio.get("io_serviced_recursive"), "write"),
    }


def _blkio_sum(entries, op):
    return sum(entry.get("value", 0) for entry in entries or () if str(entry.get("op", "")).lower() == op)


def uptime_ns(attrs, now=None):
    """Nanoseconds since the container started; 0 when it is not running."""
    state = attrs.get("State") or {}
    started = parse_docker_time(state.get("StartedAt"))
    if not state.get("Running") or started is None:
        return 0
    return max(0, int(((now or time.time()) - started) * 1e9))


class _Attrs:
    """Adapter so the label/state helpers of agent.services.docker work on a raw attrs dict."""

    def __init__(self, attrs):
        self.attrs = attrs


def metrics(attrs, stats, now=None):
    """ContainerMetrics (docs/commands.md, "Shapes") from inspect ``attrs`` and a stats sample."""
    view = _Attrs(attrs)
    labels = labels_of(view)
    uptime = uptime_ns(attrs, now)
    return {
        "container_id": attrs.get("Id", ""),
        "container_name": (attrs.get("Name") or "").lstrip("/"),
        "status": status_of(view),
        "state": state_of(view),
        "cpu": cpu_figures(stats, attrs.get("HostConfig")),
        "memory": memory_figures(stats),
        "network": network_figures(stats),
        "disk": disk_figures(stats),
        "health": health_of(view),
        "uptime": uptime,
        "uptime_seconds": uptime / 1e9,
        "restart_count": attrs.get("RestartCount", 0),
        "labels": labels,
        "pulseup_managed": labels.get(MANAGED) == "true",
        "timestamp": rfc3339(now),
    }
