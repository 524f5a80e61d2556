"""tests/ci.py: with CI=true a skip of any kind fails; locally it stays a skip; xfail is kept."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = '''
import pytest

@pytest.mark.skipif(True, reason="needs root")
def test_marked():
    pass

@pytest.fixture
def needs_tool():
    pytest.skip("no docker CLI on PATH")

def test_fixture_skip(needs_tool):
    pass

@pytest.mark.xfail(strict=True, reason="known bug")
def test_known_bug():
    assert False

def test_plain():
    pass
'''


def _run(tmp_path, ci):
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {**os.environ, "CI": ci, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.ci", "-q",
                           "-rfs", "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120)


def test_ci_turns_every_skip_into_a_failure(tmp_path):
    done = _run(tmp_path, "true")
    assert done.returncode == 1, done.stdout
    # both skips happen in setup, so pytest counts the failed reports as errors
    assert "1 passed, 1 xfailed, 2 errors" in done.stdout, done.stdout
    assert "needs root" in done.stdout and "no docker CLI on PATH" in done.stdout


def test_local_runs_keep_their_skips(tmp_path):
    done = _run(tmp_path, "")
    assert done.returncode == 0, done.stdout
    assert "1 passed, 2 skipped, 1 xfailed" in done.stdout, done.stdout


def test_the_suite_uses_the_guard():
    """tests/conftest.py exposes the hook, so every test of the suite is under it."""
    import tests.ci
    import tests.conftest
    assert tests.conftest.pytest_runtest_makereport is tests.ci.pytest_runtest_makereport
