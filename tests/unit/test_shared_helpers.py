"""The helpers that replaced per-module copies: ``values.rfc3339`` (one precision per call
site, byte for byte what the copies printed), ``fsutil.unlink_quietly``, ``fields.NoArguments``."""

import time
from datetime import datetime, timezone

import pytest

from agent import fsutil, values
from agent.protocol.fields import NoArguments, load_request

EPOCHS = [0.0, 1.0, 1700000000.0, 1700000000.5, 1700000000.123456, 1700000000.9999996, 1733412345.000001]


@pytest.mark.parametrize("epoch", EPOCHS)
def test_rfc3339_prints_what_each_former_copy_printed(epoch):
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    assert values.rfc3339(epoch) == moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert values.rfc3339(epoch, "ms") == (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))
                                           + f".{int(epoch % 1 * 1000):03d}Z")
    assert values.rfc3339(epoch, "s") == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    assert values.rfc3339(epoch, "auto") == moment.isoformat().replace("+00:00", "Z")


def test_rfc3339_forms():
    assert values.rfc3339(1700000000.5) == "2023-11-14T22:13:20.500000Z"
    assert values.rfc3339(1700000000.5, "ms") == "2023-11-14T22:13:20.500Z"
    assert values.rfc3339(1700000000.5, "s") == "2023-11-14T22:13:20Z"
    assert values.rfc3339(1700000000.0, "auto") == "2023-11-14T22:13:20Z"
    assert values.rfc3339(1700000000.5, "auto") == "2023-11-14T22:13:20.500000Z"
    assert values.rfc3339().endswith("Z")
    with pytest.raises(ValueError):
        values.rfc3339(0, "ns")


def test_unlink_quietly(tmp_path):
    target = tmp_path / "f"
    target.write_text("x")
    fsutil.unlink_quietly(str(target))
    assert not target.exists()
    fsutil.unlink_quietly(str(target))          # missing: no error
    fsutil.unlink_quietly(str(tmp_path))        # a directory: OSError, ignored
    assert tmp_path.is_dir()


def test_no_arguments_ignores_unknown_keys_and_refuses_a_non_object():
    assert load_request(NoArguments(), {"extra": 1}) == {}
    assert load_request(NoArguments(), None) == {}
    with pytest.raises(Exception) as info:
        load_request(NoArguments(), [1])
    assert info.value.code == "invalid_argument"
