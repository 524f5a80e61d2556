"""SystemService and its handlers, cross-checked against /proc and the kernel's own files."""

import os
import socket
import subprocess
import sys
import time
from collections import namedtuple

import gevent
import pytest
from gevent.pywsgi import WSGIServer

from agent import config
from agent.handlers import system as handlers
from agent.services.context import CallContext
from agent.handlers.registry import Registry
from agent.protocol.fields import load_request
from agent.services import Services
from agent.services.system import SystemService, busy_percent, host_uptime, network_totals

GIB = 1024 ** 3


@pytest.fixture
def cfg():
    return config.defaults()


@pytest.fixture
def service(cfg):
    return SystemService(cfg)


def meminfo_total():
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal")


def cpuinfo_counts():
    logical, cores = 0, set()
    physical = None
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "processor":
                logical += 1
            elif key == "physical id":
                physical = value
            elif key == "core id":
                cores.add((physical, value))
    return logical, len(cores) or logical


def root_fs_total():
    stat = os.statvfs("/")
    return stat.f_blocks * stat.f_frsize


def test_hardware_info_has_the_exact_shape(service):
    handlers.HardwareInfoSchema().load(service.hardware_info())


def test_hardware_info_matches_proc(service):
    info = service.hardware_info()
    logical, physical = cpuinfo_counts()
    assert info["cpu_logical_count"] == logical == os.cpu_count()
    assert info["cpu"]["cores"] == info["cpu_physical_cores"] == physical
    assert info["memory"]["total"] == meminfo_total()
    assert info["total_memory_gb"] == pytest.approx(meminfo_total() / GIB, abs=0.01)
    assert info["storage"]["total"] == root_fs_total()
    assert info["storage_total_gb"] == pytest.approx(root_fs_total() / GIB, abs=0.01)
    with open("/proc/sys/kernel/hostname") as handle:
        assert info["hostname"] == handle.read().strip()
    with open("/proc/sys/kernel/osrelease") as handle:
        assert info["os"]["kernel"] == handle.read().strip()
    assert info["storage"]["type"] in ("ssd", "hdd", "unknown")


def test_interfaces_are_cidr_and_skip_loopback(service):
    interfaces = service.hardware_info()["network"]["interfaces"]
    for entry in interfaces:
        assert entry["name"] != "lo"
        address, _, prefix = entry["ip"].partition("/")
        socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)
        assert prefix.isdigit()
    primary = service.hardware_info().get("primary_ip")
    if primary is not None:
        assert any(entry["ip"].startswith(primary + "/") for entry in interfaces)


def test_live_stats_has_the_exact_shape(service):
    handlers.LiveStatsSchema().load(service.live_stats())


def test_live_stats_matches_proc(service):
    before_in, before_out = proc_net_dev_totals()
    uptime_before = host_uptime()
    stats = service.live_stats()
    after_in, after_out = proc_net_dev_totals()
    assert int(uptime_before) <= stats["uptime_seconds"] <= host_uptime() + 1
    with open("/proc/uptime") as handle:
        assert abs(stats["uptime_seconds"] - float(handle.read().split()[0])) < 5
    assert stats["memory_total_gb"] == pytest.approx(meminfo_total() / GIB, abs=0.01)
    assert stats["disk_total_gb"] == pytest.approx(root_fs_total() / GIB, abs=0.01)
    assert 0 <= stats["disk_used_gb"] <= stats["disk_total_gb"]
    assert 0 <= stats["memory_usage_percent"] <= 100
    assert before_in <= stats["network_bytes_in"] <= after_in
    assert before_out <= stats["network_bytes_out"] <= after_out
    with open("/proc/loadavg") as handle:
        load_1 = float(handle.read().split()[0])
    assert abs(stats["load_avg_1"] - load_1) < 2
    assert 0 <= stats["cpu_percent"] <= 100
    assert stats["timestamp"].endswith("Z")


def proc_net_dev_totals():
    received = sent = 0
    with open("/proc/net/dev") as handle:
        for line in handle.readlines()[2:]:
            name, _, fields = line.partition(":")
            if name.strip() == "lo":
                continue
            numbers = fields.split()
            received += int(numbers[0])
            sent += int(numbers[8])
    return received, sent


def test_network_totals_exclude_loopback():
    assert network_totals() <= proc_net_dev_totals()


Times = namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")


def test_busy_percent_accounting():
    start = Times(100, 0, 50, 800, 50, 0, 0, 0, 0, 0)
    # 60 busy (user 40 + system 20), 40 idle (30 idle + 10 iowait); guest is inside user
    end = Times(140, 0, 70, 830, 60, 0, 0, 0, 10, 0)
    assert busy_percent(start, end) == 60.0
    assert busy_percent(end, end) == 0.0
    assert busy_percent(end, start) == 0.0   # counters going back (never in practice) clamp


def test_sampler_sees_a_busy_core(cfg):
    services = Services(cfg)
    service = SystemService(cfg, sample_interval=0.1)
    greenlet = service.start(services)
    assert service.start(services) is greenlet   # idempotent
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        deadline = time.monotonic() + 10
        seen = []
        while time.monotonic() < deadline:
            gevent.sleep(0.1)
            seen.append(service.live_stats()["cpu_percent"])
            if len(seen) > 5 and max(seen[-3:]) > 20:   # one busy core of N is >= 100/N %
                break
        assert max(seen[-3:]) > 20, seen
    finally:
        burner.kill()
        burner.wait()
        services.close(timeout=1)


def test_public_ip_off_by_default(service):
    assert service.hardware_info()["public_ip"] == "unknown"


@pytest.fixture
def ip_server():
    state = {"hits": 0, "body": b"203.0.113.7\n", "delay": 0.0}

    def app(environ, start_response):
        state["hits"] += 1
        gevent.sleep(state["delay"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [state["body"]]

    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    state["url"] = f"http://127.0.0.1:{server.server_port}/"
    yield state
    server.stop(timeout=1)


def lookup_service(cfg, ip_server):
    return SystemService(cfg.replace(pulseup_public_ip_lookup=True,
                                     pulseup_public_ip_lookup_url=ip_server["url"]))


def test_public_ip_lookup_is_cached(cfg, ip_server):
    service = lookup_service(cfg, ip_server)
    assert service.hardware_info()["public_ip"] == "203.0.113.7"
    assert service.public_ip() == "203.0.113.7"
    assert ip_server["hits"] == 1


def test_public_ip_garbage_is_unknown(cfg, ip_server):
    ip_server["body"] = b"<html>not an address</html>"
    assert lookup_service(cfg, ip_server).public_ip() == "unknown"


def test_public_ip_slow_service_times_out(cfg, ip_server):
    ip_server["delay"] = 3.0
    service = lookup_service(cfg, ip_server)
    service.PUBLIC_IP_TIMEOUT = 0.3
    started = time.monotonic()
    assert service.public_ip() == "unknown"
    assert time.monotonic() - started < 2.5      # well under the server's 3 s
    assert service.public_ip() == "unknown"      # failure cached: no second wait
    assert ip_server["hits"] == 1


def test_handlers_are_registered_and_thin(cfg):
    registry = Registry()
    handlers.register(registry)
    services = Services(cfg)
    for name, schema in (("agent.hardware.info", handlers.HardwareInfoSchema),
                         ("server.stats.live", handlers.LiveStatsSchema)):
        command = registry.get(name)
        request = load_request(command.schema, {"ignored": 1})
        reply = command.func(CallContext(services, name), request)
        schema().load(reply)
