"""Hypothesis fuzzing of the config parser (docs/design.md, "Test sizes"): random KEY=VALUE files and
environments -> a Config or ConfigError, never another exception (the CLI turns ConfigError
into exit 78; anything else would be a traceback at boot).

Each example is a batch of BATCH files (or environments). 10,000 cases under ``ci``
(docs/design.md, "Test sizes") is ``PULSEUP_FUZZ_CONFIG_BATCH=20`` (~40 s here); the default of 4 gives
2,000 files + 2,000 environments in ~8 s to keep this suite near its time budget.
"""

import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from agent import config
from agent.errors import ConfigError

NAMES = [s.name for s in config.SETTINGS]
PLAUSIBLE = ["", "0", "1", "-1", "true", "off", "30s", "1h30m", "1e999", "nan", "-5m", "16MiB", "9" * 5000,
             "/abs/path", "rel/path", "wss://h/ws/agent_v2", "wss://[::1", "http://", "sha256:" + "a" * 64,
             "'quoted'", '"dq \\" x"', "value # comment", " spaced ", "\x00", "a:b:/c", "WARN"]
values = st.sampled_from(PLAUSIBLE) | st.text(max_size=30)
keys = st.sampled_from(NAMES) | st.text(max_size=12)
assignment = st.builds(lambda prefix, k, v: f"{prefix}{k}={v}", st.sampled_from(["", "export ", "  "]), keys, values)
lines = assignment | st.sampled_from(["", "# comment", "; comment", "no equals sign"]) | st.text(max_size=40)
BATCH = int(os.environ.get("PULSEUP_FUZZ_CONFIG_BATCH", "4"))
FUZZ = settings(suppress_health_check=[HealthCheck.too_slow], derandomize=True)
WORK = tempfile.mkdtemp(prefix="pulseup-fuzz-config-")


def load_or_refuse(**kwargs):
    try:
        cfg = config.load(use_dotenv=False, **kwargs)
    except ConfigError as exc:
        assert str(exc)
        return None
    assert isinstance(cfg, config.Config)
    return cfg


@FUZZ
@given(st.lists(st.lists(lines, max_size=8), min_size=BATCH, max_size=BATCH))
def test_random_config_files(files):
    path = os.path.join(WORK, "config")
    for file_lines in files:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(file_lines))
        load_or_refuse(config_file=path, environ={})


@FUZZ
@given(st.lists(st.dictionaries(keys, values, max_size=6), min_size=BATCH, max_size=BATCH))
def test_random_environments(environments):
    for environ in environments:
        load_or_refuse(config_file=os.devnull, environ=environ)


def test_a_valid_file_really_loads():
    path = os.path.join(WORK, "valid")
    with open(path, "w") as handle:
        handle.write('export LOG_LEVEL=warn\nPING_TIMEOUT="2m"\n# note\nMAX_MESSAGE_BYTES=1MiB\n')
    cfg = load_or_refuse(config_file=path, environ={})
    assert (cfg.log_level, cfg.ping_timeout, cfg.max_message_bytes) == ("WARNING", 120.0, 1024**2)


def test_a_file_that_is_not_utf8_is_a_config_error():
    path = os.path.join(WORK, "latin1")
    with open(path, "wb") as handle:
        handle.write(b"LOG_LEVEL=INFO\nWORKER_USER=j\xf6rg\n")
    with pytest.raises(ConfigError):
        config.load(config_file=path, environ={}, use_dotenv=False)
