"""Storage paths (docs/commands.md, "Databases") and retention, on real directories."""

import json
import os
import stat

import pytest

from agent import config
from agent.errors import AgentError
from agent.services.backups import retention, storage
from agent.services.backups import manifest as mf
from tests.unit.test_backup_ops_support import make_backup

DAY = 86400.0
NOW = 1_750_000_000.0


@pytest.fixture
def cfg(tmp_path):
    (tmp_path / "backups").mkdir()
    (tmp_path / "srv").mkdir()
    return config.defaults().replace(
        state_dir=str(tmp_path / "state"), pulseup_backup_dir=str(tmp_path / "backups"),
        pulseup_backup_storage_roots=(str(tmp_path / "backups"), str(tmp_path / "srv")))


def test_resolve_relative_absolute_and_outside(cfg, tmp_path):
    assert storage.resolve(cfg, "copies") == str(tmp_path / "backups" / "copies")
    assert storage.resolve(cfg, str(tmp_path / "srv" / "a" / "b")) == str(tmp_path / "srv" / "a" / "b")
    assert storage.resolve(cfg, str(tmp_path / "srv")) == str(tmp_path / "srv")
    for bad in (str(tmp_path / "elsewhere"), "../state", "/etc", str(tmp_path / "srv-evil"),
                str(tmp_path / "srv" / ".." / "state"), ""):
        with pytest.raises(AgentError) as info:
            storage.resolve(cfg, bad)
        assert info.value.code == "invalid_argument" and info.value.field == "storage_path"


def test_symlink_escaping_the_roots_is_refused(cfg, tmp_path):
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "srv" / "link")
    with pytest.raises(AgentError) as info:
        storage.resolve(cfg, str(tmp_path / "srv" / "link" / "sub"))
    assert info.value.code == "invalid_argument"
    assert info.value.details["normalized_path"] == str(tmp_path / "outside" / "sub")


def test_a_file_is_refused(cfg, tmp_path):
    (tmp_path / "srv" / "afile").write_text("x")
    with pytest.raises(AgentError) as info:
        storage.verify(cfg, str(tmp_path / "srv" / "afile"))
    assert info.value.code == "invalid_argument" and "not a directory" in info.value.message
    with pytest.raises(AgentError):
        storage.verify(cfg, str(tmp_path / "srv" / "afile" / "below"))


def test_verify_creates_the_directory_and_leaves_no_probe(cfg, tmp_path):
    reply = storage.verify(cfg, str(tmp_path / "srv" / "new" / "dir"))
    target = tmp_path / "srv" / "new" / "dir"
    assert reply["status"] == "ok" and reply["normalized_path"] == str(target)
    assert reply["free_bytes"] > 0 and isinstance(reply["free_bytes"], int)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o700
    assert os.listdir(target) == []


def test_verify_unwritable_directory(cfg, tmp_path, monkeypatch):
    target = tmp_path / "srv" / "ro"
    target.mkdir()
    target.chmod(0o500)
    if os.access(target, os.W_OK):
        # root ignores the mode: make the probe meet the EACCES a worker would get
        def refuse(path):
            raise PermissionError(13, "Permission denied", path)
        monkeypatch.setattr(storage, "_probe", refuse)
    try:
        with pytest.raises(AgentError) as info:
            storage.verify(cfg, str(target))
        assert info.value.code == "permission_denied"
    finally:
        target.chmod(0o700)


def test_copy_backup_is_complete_and_never_overwrites(tmp_path):
    source = make_backup(str(tmp_path / "a"), "svc", created=NOW, payload=b"first")
    target = tmp_path / "copies"
    target.mkdir()
    other = make_backup(str(target), "other", created=NOW, payload=b"someone else's")
    copied = storage.copy_backup(source, str(target))
    assert copied != other and os.path.basename(copied).startswith(mf.stamp(NOW).join(["backup_", "-2"]))
    assert open(copied, "rb").read() == b"first" and open(other, "rb").read() == b"someone else's"
    manifest = mf.load_manifest(copied + ".json")
    assert manifest["file_name"] == os.path.basename(copied) and manifest["service_uid"] == "svc"
    assert stat.S_IMODE(os.stat(copied).st_mode) == 0o600
    assert [e["backup_path"] for e in mf.list_entries(str(target), "svc")] == [copied]
    assert not [n for n in os.listdir(target) if n.startswith(".")]


def test_failed_copy_leaves_nothing(tmp_path):
    source = make_backup(str(tmp_path / "a"), "svc", created=NOW)
    target = tmp_path / "copies"
    target.mkdir()

    def cancelled():
        raise AgentError("cancelled", "stop")

    with pytest.raises(AgentError):
        storage.copy_backup(source, str(target), check=cancelled)
    assert os.listdir(target) == []


# -- retention ------------------------------------------------------------------------------

def test_retention_deletes_only_old_own_manifest_backups(tmp_path):
    directory = str(tmp_path / "svc")
    old = [make_backup(directory, "svc", created=NOW - d * DAY) for d in (30, 20, 10)]
    recent = make_backup(directory, "svc", created=NOW - 2 * DAY)
    foreign = make_backup(directory, "other-svc", created=NOW - 40 * DAY)
    legacy = os.path.join(directory, "pulseup_backup_2020.sql")
    open(legacy, "w").write("-- legacy dump\n")
    stray = os.path.join(directory, "notes.txt")
    open(stray, "w").write("mine")
    renamed = os.path.join(directory, "backup_old.dump.zst")       # wrong name form
    open(renamed, "w").write("x")
    deleted = retention.apply([directory], "svc", 7, now=NOW)
    assert deleted == old
    for path in old:
        assert not os.path.exists(path) and not os.path.exists(path + ".json")
    for path in (recent, foreign, legacy, stray, renamed):
        assert os.path.exists(path)
    assert os.path.exists(foreign + ".json")


def test_retention_never_deletes_the_newest_or_a_pinned_file(tmp_path):
    directory = str(tmp_path / "svc")
    older = make_backup(directory, "svc", created=NOW - 90 * DAY)
    pinned = make_backup(directory, "svc", created=NOW - 60 * DAY)
    newest = make_backup(directory, "svc", created=NOW - 30 * DAY)
    assert retention.apply([directory], "svc", 0, now=NOW) == []        # 0 = keep everything
    assert retention.apply([directory], "svc", 7, pinned=frozenset({os.path.realpath(pinned)}), now=NOW) == [older]
    assert os.path.exists(pinned) and os.path.exists(newest)


def test_retention_covers_storage_copies_and_treats_them_as_one_backup(tmp_path):
    home, copies = str(tmp_path / "svc"), str(tmp_path / "copies")
    os.makedirs(copies)
    originals = [make_backup(home, "svc", created=NOW - d * DAY) for d in (20, 10)]
    copied = [storage.copy_backup(path, copies) for path in originals]
    # the newest backup exists only as a copy: its original was removed by hand
    newest_uid = mf.load_manifest(originals[1] + ".json")["backup_uid"]
    os.unlink(originals[1])
    os.unlink(originals[1] + ".json")
    deleted = retention.apply([home, copies], "svc", 5, now=NOW)
    assert deleted == [originals[0], copied[0]]
    assert mf.load_manifest(copied[1] + ".json")["backup_uid"] == newest_uid and os.path.exists(copied[1])


def test_retention_ignores_a_manifest_that_does_not_parse_or_names_another_file(tmp_path):
    directory = str(tmp_path / "svc")
    broken = make_backup(directory, "svc", created=NOW - 50 * DAY)
    open(broken + ".json", "w").write("{")
    swapped = make_backup(directory, "svc", created=NOW - 40 * DAY)
    data = json.load(open(swapped + ".json"))
    data["file_name"] = "backup_20000101T000000Z.dump.zst"
    json.dump(data, open(swapped + ".json", "w"))
    make_backup(directory, "svc", created=NOW - 1 * DAY)
    assert retention.apply([directory], "svc", 7, now=NOW) == []
    assert os.path.exists(broken) and os.path.exists(swapped)
