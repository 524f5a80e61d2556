import os
import subprocess
import sys

import pytest

from agent import __version__, exitcodes

SCRIPT = os.path.join(os.path.dirname(sys.executable), "pulseup-agent")


def run(*args, **env):
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env}, cwd="/")


@pytest.mark.skipif(not os.path.exists(SCRIPT), reason="console script not installed in this interpreter")
def test_console_script_help_version_check_config(tmp_path):
    assert run("--help").returncode == 0
    for args in (("version",), ("--version",)):
        result = run(*args)
        assert result.returncode == 0 and __version__ in result.stdout
    conf = tmp_path / "config"
    conf.write_text("LOG_LEVEL=warn\n")
    result = run("--config", str(conf), "check-config")
    assert result.returncode == 0 and f"{conf}:1" in result.stdout


def test_python_dash_m_and_worker_refusals(tmp_path):
    conf = tmp_path / "config"
    conf.write_text("")
    cmd = [sys.executable, "-m", "agent", "--config", str(conf), "worker"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd="/")
    expected = exitcodes.NO_PERMISSION if os.geteuid() == 0 else exitcodes.CONFIG
    assert result.returncode == expected, result.stderr


def test_worker_without_url_exits_78(tmp_path, monkeypatch):
    from agent import config
    from agent.worker import main
    monkeypatch.setattr(main.os, "geteuid", lambda: 1000)
    assert main.worker_main(config.defaults()) == exitcodes.CONFIG
