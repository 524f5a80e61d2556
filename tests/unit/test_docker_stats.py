import pytest

from agent.errors import AgentError
from agent.handlers import logs as log_handlers
from agent.services.context import CallContext
from agent.handlers.registry import Registry
from agent.protocol.fields import load_request
from agent.services.app.stats import cpu_figures, disk_figures, memory_figures, metrics, network_figures
from tests.unit.test_docker_fakes import (  # noqa: F401 (fixtures)
    app, cfg, database, docker_service, fake_client, services)

V1 = {
    "cpu_stats": {"cpu_usage": {"total_usage": 3_000, "percpu_usage": [1, 2, 3, 4]}, "system_cpu_usage": 20_000,
                  "throttling_data": {"throttled_periods": 7}},
    "precpu_stats": {"cpu_usage": {"total_usage": 1_000}, "system_cpu_usage": 10_000},
    "memory_stats": {"usage": 1000, "limit": 4000, "stats": {
        "cache": 300, "rss": 600, "total_inactive_file": 200, "total_cache": 300, "total_rss": 600}},
    "networks": {"eth0": {"rx_bytes": 10, "tx_bytes": 20, "rx_packets": 1, "tx_packets": 2, "rx_errors": 0, "tx_errors": 1},
                 "eth1": {"rx_bytes": 5, "tx_bytes": 5, "rx_packets": 1, "tx_packets": 1, "rx_errors": 2, "tx_errors": 0}},
    "blkio_stats": {"io_service_bytes_recursive": [{"op": "Read", "value": 4096}, {"op": "Write", "value": 8192},
                                                   {"op": "Total", "value": 12288}],
                    "io_serviced_recursive": [{"op": "Read", "value": 1}, {"op": "Write", "value": 2}]},
}

V2 = {
    "cpu_stats": {"cpu_usage": {"total_usage": 500}, "system_cpu_usage": 2_000, "online_cpus": 2},
    "precpu_stats": {"cpu_usage": {"total_usage": 0}, "system_cpu_usage": 1_000},
    "memory_stats": {"usage": 1000, "limit": 2000, "stats": {"anon": 700, "file": 250, "inactive_file": 100}},
    "blkio_stats": {"io_service_bytes_recursive": [{"op": "read", "value": 11}, {"op": "write", "value": 22}],
                    "io_serviced_recursive": None},
}


def test_cpu_two_sample_formula_and_limits():
    assert cpu_figures(V1) == {"usage": 80.0, "throttled": 7, "limit": 4.0}   # 2000/10000 * 4 cores
    assert cpu_figures(V2, {"NanoCpus": 1_500_000_000})["limit"] == 1.5
    assert cpu_figures(V2, {"CpuQuota": 50_000, "CpuPeriod": 100_000})["limit"] == 0.5
    assert cpu_figures(V2)["usage"] == 100.0
    assert cpu_figures({})["usage"] == 0.0     # a stopped container: no samples


def test_memory_cgroup_v1_and_v2():
    assert memory_figures(V1) == {"usage": 800, "limit": 4000, "percent": 20.0, "cache": 300, "rss": 600}
    assert memory_figures(V2) == {"usage": 900, "limit": 2000, "percent": 45.0, "cache": 250, "rss": 700}
    assert memory_figures({})["percent"] == 0.0


def test_network_sum_and_block_io():
    assert network_figures(V1) == {"rx_bytes": 15, "tx_bytes": 25, "rx_packets": 2, "tx_packets": 3,
                                   "rx_errors": 2, "tx_errors": 1}
    assert disk_figures(V1) == {"read_bytes": 4096, "write_bytes": 8192, "read_ops": 1, "write_ops": 2}
    assert disk_figures(V2) == {"read_bytes": 11, "write_bytes": 22, "read_ops": 0, "write_ops": 0}


def test_metrics_shape(fake_client):
    container = app(fake_client, "web", 1, health="healthy")
    container.attrs["State"]["StartedAt"] = "2024-01-01T00:00:00Z"
    sample = metrics(container.attrs, V2, now=1704067210.5)   # 10.5 s later
    assert sample["container_id"] == container.id and len(sample["container_id"]) == 64
    assert sample["container_name"] == container.name and sample["status"] == "running"
    assert sample["uptime"] == 10_500_000_000 and sample["uptime_seconds"] == 10.5
    assert sample["health"] == "healthy" and sample["pulseup_managed"] is True
    assert sample["labels"]["pulseup.service_uid"] == "web" and sample["timestamp"].endswith("Z")
    container.set_state("exited")
    assert metrics(container.attrs, {})["uptime"] == 0


def stats_call(services, data):
    registry = Registry()
    log_handlers.register(registry)
    command = registry.get("service.container.stats.live")
    return command.func(CallContext(services, command.name), load_request(command.schema, data))


def test_stats_live_targets(services, fake_client):
    fake_client.api.stats_result = V2
    web = app(fake_client, "web", 1)
    db = database(fake_client, "pg")
    assert stats_call(services, {"service_uid": "web"})["container_id"] == web.id
    assert stats_call(services, {"service_uid": "pg"})["container_id"] == db.id
    assert stats_call(services, {"container_id": web.name, "service_uid": "web"})["cpu"]["usage"] == 100.0
    with pytest.raises(AgentError) as info:
        stats_call(services, {"container_id": web.name, "service_uid": "pg"})
    assert info.value.code == "invalid_argument"
    fake_client.containers.add("stranger", labels={})
    with pytest.raises(AgentError) as info:
        stats_call(services, {"container_id": "stranger"})
    assert info.value.code == "permission_denied"
    with pytest.raises(AgentError) as info:
        stats_call(services, {})
    assert info.value.code == "invalid_argument"
    with pytest.raises(AgentError) as info:
        stats_call(services, {"service_uid": "nothing"})
    assert info.value.code == "not_found"
