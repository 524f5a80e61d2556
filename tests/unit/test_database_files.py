"""Backup names, manifests, listing and restore path containment (docs/commands.md, "Paths and files",
"Databases")."""
import os
import stat

import pytest

from agent import config
from agent.errors import AgentError
from agent.services.backups import manifest as mf
from agent.services.database import ports, restore
from agent.services.backups.streams import CompressedFile, Decoder, disk_error, file_digest


def _manifest(uid, name, created, backup_uid="b", **over):
    data = {"manifest_version": 1, "backup_uid": backup_uid, "service_uid": uid, "engine": "postgresql",
            "engine_version": "15", "image": "postgres:16", "database": "app", "format": "pg_custom",
            "compression": "zstd", "file_name": name, "size": 10, "compressed_size": 3,
            "sha256": "0" * 64, "created_at": created, "backup_type": "manual"}
    data.update(over)
    return data


def _backup(directory, uid, name, created, **over):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(b"abc")
    mf.write_json_atomic(os.path.join(directory, name + ".json"), _manifest(uid, name, created, **over))


@pytest.fixture
def cfg(tmp_path):
    return config.defaults().replace(pulseup_backup_dir=str(tmp_path))


def test_listing_newest_first_with_legacy_and_without_partials(tmp_path):
    d = str(tmp_path / "svc")
    _backup(d, "svc", "backup_20240101T000000Z.dump.zst", "2024-01-01T00:00:00.000Z", backup_uid="old")
    _backup(d, "svc", "backup_20240301T000000Z.sql.gz", "2024-03-01T00:00:00.000Z", backup_uid="new",
            format="pg_plain", compression="gzip")
    _backup(d, "other", "backup_20240401T000000Z.dump.zst", "2024-04-01T00:00:00.000Z", backup_uid="foreign")
    for name in (".backup_20240501T000000Z.dump.zst.partial-abc", "backup_20240601T000000Z.dump.zst"):
        open(os.path.join(d, name), "w").close()  # partial, and a file without manifest
    with open(os.path.join(d, "backup_2023.sql"), "w") as f:
        f.write("legacy")
    os.utime(os.path.join(d, "backup_2023.sql"), (1_600_000_000, 1_600_000_000))
    entries = mf.list_entries(d, "svc")
    assert [e.get("backup_uid") for e in entries] == ["new", "old", None]
    assert [e["legacy"] for e in entries] == [False, False, True]
    assert entries[2]["type"] == "sql" and entries[2]["compressed_size"] == 6
    assert entries[0]["database"] == "svc" and entries[0]["database_name"] == "app"
    assert mf.find_by_uid(d, "svc", "old").endswith("backup_20240101T000000Z.dump.zst")
    assert mf.find_by_uid(d, "svc", "foreign") is None
    assert mf.list_entries(str(tmp_path / "missing"), "svc") == []


def test_invalid_manifest_is_not_listed(tmp_path):
    d = str(tmp_path / "svc")
    _backup(d, "svc", "backup_20240101T000000Z.dump.zst", "2024-01-01T00:00:00.000Z", sha256="nothex")
    assert mf.list_entries(d, "svc") == []


def test_atomic_json_mode_and_no_leftovers(tmp_path):
    path = str(tmp_path / "x.json")
    mf.write_json_atomic(path, {"a": 1})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and os.listdir(tmp_path) == ["x.json"]


def test_resolve_inside_and_outside(cfg, tmp_path):
    d = str(tmp_path / "svc")
    _backup(d, "svc", "backup_20240101T000000Z.dump.zst", "2024-01-01T00:00:00.000Z", backup_uid="u1")
    inside = os.path.join(d, "backup_20240101T000000Z.dump.zst")
    assert restore.resolve(cfg, "svc", backup_path="backup_20240101T000000Z.dump.zst") == inside
    assert restore.resolve(cfg, "svc", backup_path=inside) == inside
    assert restore.resolve(cfg, "svc", backup_uid="u1") == inside
    os.makedirs(str(tmp_path / "svc2"))
    open(str(tmp_path / "svc2" / "f"), "w").close()
    os.symlink("/etc/passwd", os.path.join(d, "escape"))
    for bad in ("/etc/passwd", "../svc2/f", "escape", str(tmp_path / "svc2" / "f"), d + "-x/f"):
        with pytest.raises(AgentError) as err:
            restore.resolve(cfg, "svc", backup_path=bad)
        assert err.value.code == "invalid_argument" and "outside the backup directory" in err.value.message
    with pytest.raises(AgentError) as err:
        restore.resolve(cfg, "svc", backup_uid="nope")
    assert err.value.code == "not_found"


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_compressed_file_round_trip(tmp_path, codec):
    data = os.urandom(100_000) * 30
    sink = CompressedFile(str(tmp_path / "f"), codec)
    for i in range(0, len(data), 70_000):
        sink.write(data[i:i + 70_000])
    sink.finish()
    digest, size = file_digest(sink.path)
    assert digest == sink.sha256.hexdigest() and size == sink.compressed_size
    decoder = Decoder(sink.path, codec)
    pieces = list(decoder.chunks())
    decoder.close()
    assert b"".join(pieces) == data and max(map(len, pieces)) <= 1 << 20


def test_truncated_gzip_is_an_integrity_error(tmp_path):
    sink = CompressedFile(str(tmp_path / "f"), "gzip")
    sink.write(os.urandom(50_000))
    sink.finish()
    with open(sink.path, "r+b") as f:
        f.truncate(1000)
    decoder = Decoder(sink.path, "gzip")
    with pytest.raises(AgentError) as err:
        list(decoder.chunks())
    assert err.value.code == "integrity_error"


def test_abort_removes_the_file(tmp_path):
    sink = CompressedFile(str(tmp_path / "f"), "zstd")
    sink.write(b"x" * 1000)
    sink.abort()
    assert os.listdir(tmp_path) == []


def test_disk_errors():
    import errno
    assert disk_error(OSError(errno.ENOSPC, "full"), "/b").code == "failed_precondition"
    assert disk_error(OSError(errno.EACCES, "no"), "/b").code == "failed_precondition"
    assert disk_error(OSError(errno.EIO, "io"), "/b").code == "internal"


def test_host_port_probe():
    import socket
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        assert not ports.host_port_free("127.0.0.1", port)
        assert not ports.host_port_free("0.0.0.0", port)
    assert ports.host_port_free("127.0.0.1", port)
