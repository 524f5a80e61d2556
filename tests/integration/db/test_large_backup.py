"""A ~256 MB PostgreSQL dump is streamed with flat memory (docs/design.md, "Test sizes": 1 GB runs in
bench/)."""
import subprocess
import time

import gevent
import psutil
import pytest
from helpers import PASSWORD, psql

from agent.services.backups.pipeline import BackupJob, Progress
from agent.services.database.provision import DeployRequest

ROWS = 1_000_000            # ~265 bytes per row in the dump: ~256 MB uncompressed
RSS_LIMIT = 30 * 1024 ** 2


def test_256mb_backup_keeps_memory_flat(recorder, uid_factory, docker_client, monkeypatch):
    uid = uid_factory("big")
    recorder.services.database.deploy(recorder.ctx(), DeployRequest(uid, "postgresql", PASSWORD))
    # generated server-side: nothing of this size passes through the test process
    generate = time.monotonic()
    psql(docker_client, uid, f"CREATE UNLOGGED TABLE big AS SELECT g AS id, repeat(md5(g::text), 8) AS v "
                             f"FROM generate_series(1, {ROWS}) g")
    generate = time.monotonic() - generate
    monkeypatch.setattr(Progress, "interval", 0.5)
    proc = psutil.Process()
    baseline = peak = proc.memory_info().rss

    def sample():
        nonlocal peak
        while True:
            peak = max(peak, proc.memory_info().rss)
            gevent.sleep(0.05)

    sampler = gevent.spawn(sample)
    started = time.monotonic()
    try:
        result = recorder.services.backups.create(recorder.ctx(), BackupJob(uid, "big"))
    finally:
        sampler.kill()
    elapsed = time.monotonic() - started
    assert result["size"] > 240 * 1024 ** 2, result["size"]
    growth = peak - baseline
    assert growth < RSS_LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB"
    progress = [e["bytes_done"] for e in recorder.of("backup_progress_update") if "bytes_done" in e]
    assert progress == sorted(progress) and len(set(progress)) >= 2 and progress[-1] == result["size"]
    # the stored file decompresses (with the system's zstd) to exactly the recorded size
    out = subprocess.run(f"zstd -dc {result['backup_path']} | wc -c", shell=True, check=True,
                         capture_output=True, text=True, timeout=120)
    assert int(out.stdout) == result["size"]
    print(f"data generation {generate:.1f} s; 256 MB backup: {elapsed:.1f} s, {result['size'] / elapsed / 2**20:.0f} MiB/s, "
          f"RSS +{growth / 2**20:.1f} MiB")


@pytest.fixture(autouse=True)
def _quiet(caplog):
    caplog.set_level("WARNING")
