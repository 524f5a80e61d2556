"""Restart recovery removes what a SIGKILLed backup half wrote (issue 13: no half-written
file), and nothing else: the unit-level side of test_faults_worker_kill's backup case."""

import json
import os

from agent.services.backups import manifest as mf
from agent.worker.main import Worker
from tests.unit.fakes import make_config


def _touch(path, data=b"x"):
    with open(path, "wb") as handle:
        handle.write(data)


def test_partials_of_interrupted_backups_go_the_rest_stays(tmp_path):
    cfg = make_config(tmp_path, websocket_url="wss://127.0.0.1:1/ws/agent_v2",
                      pulseup_backup_dir=str(tmp_path / "backups"))
    os.makedirs(cfg.state_dir)
    killed, other = tmp_path / "backups" / "db1", tmp_path / "backups" / "db2"
    killed.mkdir(parents=True)
    other.mkdir()
    partial = mf.temp_name("backup_20260101T000000Z.dump.zst")
    manifest_partial = mf.temp_name("backup_20250101T000000Z.dump.zst.json")
    keep = ["backup_20250101T000000Z.dump.zst", "backup_20250101T000000Z.dump.zst.json", ".hidden-note"]
    for name in [partial, manifest_partial] + keep:
        _touch(killed / name)
    _touch(other / partial)                  # a service whose backup was not interrupted
    with open(os.path.join(cfg.state_dir, "operations.json"), "w") as handle:
        json.dump([{"operation_id": "backup:b1", "kind": "backup", "service_uid": "db1", "backup_uid": "b1"},
                   {"operation_id": "deploy:d1", "kind": "deploy", "service_uid": "db2", "deployment_uid": "d1"},
                   {"operation_id": "backup:b2", "kind": "backup", "service_uid": "../db2", "backup_uid": "b2"}],
                  handle)
    Worker(cfg, identity=None).close()
    assert sorted(os.listdir(killed)) == sorted(keep)
    assert os.listdir(other) == [partial]


def test_discard_partials_of_a_missing_directory(tmp_path):
    assert mf.discard_partials(str(tmp_path / "none")) == []
