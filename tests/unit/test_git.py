"""Git service: input rules, the child environment, error classification, the askpass helper."""
import os
import subprocess

import pytest

from agent import config
from agent.errors import AgentError
from agent.services import git as gitsvc


@pytest.mark.parametrize("branch", ["main", "feature/x-1", "release-1.2", "a_b"])
def test_valid_branches(branch):
    assert gitsvc.validate_branch(branch) == branch


@pytest.mark.parametrize("branch", ["--upload-pack=x", "-x", "/main", "main/", "a..b", "x.lock", "a b",
                                    "a;b", "", "a" * 256, "a//b", "$(id)", "a/.hidden"])
def test_hostile_branches_refused(branch):
    with pytest.raises(AgentError) as info:
        gitsvc.validate_branch(branch)
    assert info.value.code == "invalid_argument"


def test_sha_rule():
    assert gitsvc.validate_sha("ABCDEF1") == "abcdef1"
    for bad in ("abc123", "xyz12345", "a" * 65, "--all"):
        with pytest.raises(AgentError):
            gitsvc.validate_sha(bad)


def _norm(url, hosts=("github.com",), insecure=False):
    return gitsvc.normalize_repo_url(url, hosts, insecure)


def test_owner_name_becomes_github_url():
    assert _norm("octo/app") == "https://github.com/octo/app.git"
    assert _norm("octo/app.git") == "https://github.com/octo/app.git"
    assert _norm("https://GitHub.com/octo/app") == "https://github.com/octo/app"


@pytest.mark.parametrize("url", [
    "https://evil.example/octo/app.git", "https://github.com.evil.example/x.git",
    "https://user:pw@github.com/octo/app.git", "https://tok@github.com/octo/app.git",
    "https://github.com/octo/app.git?x=1", "https://github.com/octo/app.git#frag",
    "ssh://github.com/octo/app.git", "file:///etc/passwd", "ext::sh -c id", "-uhttps://github.com/a/b",
    "https://github.com/../../etc", "https://github.com:8443/octo/app.git", "https://github.com"])
def test_hostile_urls_refused(url):
    with pytest.raises(AgentError) as info:
        _norm(url)
    assert info.value.code == "invalid_argument"


def test_ports_in_allowed_hosts():
    assert _norm("https://git.local:8443/a/b.git", ("git.local:8443",)) == "https://git.local:8443/a/b.git"
    with pytest.raises(AgentError):
        _norm("https://git.local/a/b.git", ("git.local:8443",))
    assert _norm("https://git.local:443/a/b.git", ("git.local",)) == "https://git.local:443/a/b.git"


def test_plain_http_needs_insecure_transport():
    with pytest.raises(AgentError) as info:
        _norm("http://127.0.0.1:9000/a.git", ("127.0.0.1:9000",))
    assert info.value.code == "permission_denied"
    assert _norm("http://127.0.0.1:9000/a.git", ("127.0.0.1:9000",), True) == "http://127.0.0.1:9000/a.git"


def test_strip_credentials():
    assert gitsvc.strip_credentials("https://x:tok@github.com/a/b.git") == "https://github.com/a/b.git"
    assert gitsvc.strip_credentials("https://github.com/a/b.git") == "https://github.com/a/b.git"


def test_child_environment_is_minimal(tmp_path, monkeypatch):
    monkeypatch.setenv("JOIN_TOKEN", "agent-secret-join-token")
    cfg = config.defaults().replace(state_dir=str(tmp_path), git_ca_file="/etc/ca.pem")
    runner = gitsvc.GitRunner(cfg, "/x/askpass.sh", str(tmp_path))
    env = runner.environment("the-token")
    assert "JOIN_TOKEN" not in env and "agent-secret-join-token" not in env.values()
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["PULSEUP_GIT_TOKEN"] == "the-token" and env["GIT_ASKPASS"] == "/x/askpass.sh"
    assert env["GIT_ALLOW_PROTOCOL"] == "https"
    assert (env["GIT_CONFIG_KEY_0"], env["GIT_CONFIG_VALUE_0"]) == ("http.sslCAInfo", "/etc/ca.pem")
    anonymous = runner.environment(None)
    assert "GIT_ASKPASS" not in anonymous and "PULSEUP_GIT_TOKEN" not in anonymous


def test_askpass_prints_the_token_from_its_environment(tmp_path):
    service = gitsvc.GitService(config.defaults().replace(state_dir=str(tmp_path)))
    script = service.runner.askpass_path
    assert os.stat(script).st_mode & 0o777 == 0o700
    with open(script) as handle:
        assert "tok-123" not in handle.read()
    env = {"PATH": "/usr/bin:/bin", gitsvc.TOKEN_ENV: "tok-123"}
    password = subprocess.run([script, "Password for 'https://x@h': "], env=env, capture_output=True, text=True)
    user = subprocess.run([script, "Username for 'https://h': "], env=env, capture_output=True, text=True)
    assert password.stdout == "tok-123\n"
    assert user.stdout == "x-access-token\n"


@pytest.mark.parametrize("stderr,code", [
    ("fatal: Authentication failed for 'https://h/a.git/'", "permission_denied"),
    ("fatal: could not read Username for 'https://h': terminal prompts disabled", "permission_denied"),
    ("fatal: couldn't find remote ref refs/heads/nope", "not_found"),
    ("fatal: unable to access 'https://h/a.git/': The requested URL returned error: 404", "not_found"),
    ("fatal: unable to access 'https://h/': Could not resolve host: h", "unavailable"),
    ("fatal: unable to access 'https://h/': Failed to connect to h port 443", "unavailable"),
    ("error: something odd happened", "command_failed"),
])
def test_classify(stderr, code):
    error = gitsvc.classify("git fetch", 128, stderr)
    assert error.code == code
    if code == "command_failed":
        assert error.details["exit_code"] == 128 and "something odd" in error.details["stderr_tail"]


def test_classify_redacts_registered_secrets():
    from agent import log
    log.register_secret("s3cr3t-token-value")
    try:
        error = gitsvc.classify("git fetch", 1, "error: bad s3cr3t-token-value")
    finally:
        log.forget_secret("s3cr3t-token-value")
    assert "s3cr3t-token-value" not in error.message + error.details["stderr_tail"]


def test_swap_in_replaces_a_directory_and_a_file(tmp_path):
    for existing in ("dir", "file"):
        target, fresh = tmp_path / f"app-{existing}", tmp_path / f"new-{existing}"
        if existing == "dir":
            (target / "junk").mkdir(parents=True)
        else:
            target.write_text("not a work tree")
        (fresh / ".git").mkdir(parents=True)
        gitsvc._swap_in(str(fresh), str(target))
        assert (target / ".git").is_dir() and not fresh.exists()
        assert [p.name for p in tmp_path.iterdir() if ".old-" in p.name] == []


def test_foreign_directory_is_not_a_work_tree(tmp_path):
    service = gitsvc.GitService(config.defaults().replace(state_dir=str(tmp_path), apps_dir=str(tmp_path)))
    (tmp_path / "svc" / ".git").mkdir(parents=True)
    (tmp_path / "svc" / ".git" / "config").write_text('[remote "origin"]\n\turl = https://github.com/a/b.git\n')
    assert service._is_work_tree_for(str(tmp_path / "svc"), "https://github.com/a/b.git")
    assert not service._is_work_tree_for(str(tmp_path / "svc"), "https://github.com/a/c.git")
    assert not service._is_work_tree_for(str(tmp_path / "none"), "https://github.com/a/b.git")


def test_credentials_in_an_old_remote_url_are_removed(tmp_path):
    service = gitsvc.GitService(config.defaults().replace(state_dir=str(tmp_path), apps_dir=str(tmp_path)))
    config_file = tmp_path / "svc" / ".git" / "config"
    config_file.parent.mkdir(parents=True)
    config_file.write_text('[remote "origin"]\n\turl = https://x:oldtoken@github.com/a/b.git\n')
    assert service._is_work_tree_for(str(tmp_path / "svc"), "https://github.com/a/b.git")
    assert "oldtoken" not in config_file.read_text()
