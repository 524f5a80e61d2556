import os
import re
import subprocess
import sys

import pytest

from agent import config, log
from agent.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_setting_is_documented_and_parses_its_default():
    for setting in config.SETTINGS:
        assert setting.name.isupper() and setting.doc and len(setting.doc) < 120
    names = [s.name for s in config.SETTINGS]
    assert len(names) == len(set(names))
    seed = ["WEBSOCKET_URL", "JOIN_TOKEN", "RECONNECT_ENABLED", "RECONNECT_INTERVAL", "RECONNECT_MAX_ATTEMPTS",
            "RECONNECT_BACKOFF_MAX", "PULSEUP_BACKUP_DIR", "LOG_LEVEL", "CADDY_HTTP_PORT", "CADDY_HTTPS_PORT"]
    assert set(seed) <= set(names)


def test_readme_table_matches_settings():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        rows = re.findall(r"^\| `([A-Z0-9_]+)` \|", handle.read(), re.M)
    assert rows == [s.name for s in config.SETTINGS]


def test_example_config_lists_every_setting():
    with open(os.path.join(ROOT, "conf", "config.example"), encoding="utf-8") as handle:
        keys = re.findall(r"^#([A-Z0-9_]+)=", handle.read(), re.M)
    assert keys == [s.name for s in config.SETTINGS]


def test_precedence_file_dotenv_env_cli(tmp_path):
    conf = tmp_path / "config"
    conf.write_text("LOG_LEVEL=DEBUG\nRECONNECT_INTERVAL=5\nPING_INTERVAL=10\nCOMMAND_TIMEOUT=7\n")
    (tmp_path / ".env").write_text("RECONNECT_INTERVAL=6\nPING_INTERVAL=11\n")
    default_file = tmp_path / "missing"
    cfg = config.load(None, environ={"PING_INTERVAL": "12", "COMMAND_TIMEOUT": "8"}, use_dotenv=True,
                      cwd=str(tmp_path), cli_overrides={"COMMAND_TIMEOUT": "9"})
    assert cfg.ping_interval == 12 and cfg.command_timeout == 9 and cfg.reconnect_interval == 6
    cfg = config.load(str(conf), environ={"PING_INTERVAL": "12"}, cwd=str(tmp_path))
    # an explicit --config disables .env (docs/design.md, "Settings and files")
    assert (cfg.log_level, cfg.reconnect_interval, cfg.ping_interval) == ("DEBUG", 5, 12)
    assert cfg.source("RECONNECT_INTERVAL") == f"{conf}:2"
    assert not default_file.exists()


def test_bad_value_names_key_value_and_source(tmp_path):
    conf = tmp_path / "config"
    conf.write_text("# comment\nCADDY_HTTP_PORT=eighty\n")
    with pytest.raises(ConfigError) as info:
        config.load(str(conf), environ={})
    text = str(info.value)
    assert "CADDY_HTTP_PORT='eighty'" in text and f"{conf}:2" in text and "integer" in text


def test_secret_value_not_echoed_in_errors(tmp_path):
    conf = tmp_path / "config"
    conf.write_text("ENROLL_CA_PIN=sha256:zz\n")
    with pytest.raises(ConfigError):
        config.load(str(conf), environ={})


def test_unknown_key_warns_with_suggestion(tmp_path):
    conf = tmp_path / "config"
    conf.write_text('RECONECT_INTERVAL="3"\nexport LOG_FORMAT=text\n')
    cfg = config.load(str(conf), environ={})
    assert cfg.log_format == "text"
    assert "did you mean RECONNECT_INTERVAL" in cfg.warnings[0]


def test_missing_explicit_config_fails_default_is_fine(tmp_path):
    with pytest.raises(ConfigError):
        config.load(str(tmp_path / "nope"), environ={})
    config.load(None, environ={}, use_dotenv=False)


def test_config_is_read_only():
    cfg = config.defaults()
    with pytest.raises(AttributeError):
        cfg.log_level = "DEBUG"


@pytest.mark.parametrize("name,raw,value", [
    ("RECONNECT_INTERVAL", "90s", 90), ("RECONNECT_INTERVAL", "1h30m", 5400), ("MAX_MESSAGE_BYTES", "16MiB", 16 << 20),
    ("RECONNECT_ENABLED", "off", False), ("LOG_LEVEL", "warn", "WARNING"), ("RECONNECT_ENABLED", "YES", True),
])
def test_value_forms(name, raw, value):
    assert getattr(config.load(None, environ={name: raw}, use_dotenv=False), name.lower()) == value


def test_cli_exit_78_and_check_config_masks_secrets(tmp_path):
    env = {**os.environ, "JOIN_TOKEN": "super-secret-join-token", "HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "agent", "--config", str(tmp_path / "nope"), "check-config"]
    bad = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert bad.returncode == 78 and "nope" in bad.stderr
    (tmp_path / "c").write_text("")
    good = subprocess.run(cmd[:4] + [str(tmp_path / "c"), "check-config"], capture_output=True, text=True,
                          env=env, cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert "super-secret-join-token" not in good.stdout and "JOIN_TOKEN" in good.stdout


def test_secrets_never_appear_in_logs(capsys):
    import io
    stream = io.StringIO()
    logger = log.setup("DEBUG", "json", stream)
    log.register_secret("hunter2-password")
    logger.getChild("t").info("connecting with hunter2-password", extra={"Access_Token": "abc-123-xyz",
                                                                          "detail": {"Password": "p4ss"}})
    logger.getChild("t").info("key -----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY----- done")
    out = stream.getvalue()
    for secret in ("hunter2-password", "abc-123-xyz", "p4ss", "MIIB"):
        assert secret not in out
    assert '"component": "t"' in out and '"level": "INFO"' in out
