"""Git service: input rules, the child environment, error classification, the askpass helper."""
import os
import shutil
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
    assert env["GIT_CONFIG_NOSYSTEM"] == "1" and env["GIT_CONFIG_GLOBAL"] == os.devnull
    assert env["GIT_ATTR_NOSYSTEM"] == "1"
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


# -- git runs nothing from the work tree (docs/security.md, "Git") ---------------------------

def _service(tmp_path):
    cfg = config.defaults().replace(state_dir=str(tmp_path / "state"), apps_dir=str(tmp_path / "apps"))
    return gitsvc.GitService(cfg)


def test_argv_names_the_repository_and_overrides_what_executes(tmp_path):
    runner = gitsvc.GitRunner(config.defaults(), "/x/askpass.sh", str(tmp_path))
    argv = runner.argv(["fetch", "origin"], gitsvc.Tree("/s/git/repos/a.git", "/apps/a"))
    assert argv[:3] == ["git", "--git-dir=/s/git/repos/a.git", "--work-tree=/apps/a"]
    assert argv[-2:] == ["fetch", "origin"]
    settings = {argv[i + 1] for i, word in enumerate(argv) if word == "-c"}
    for required in ("core.hooksPath=/dev/null", "core.fsmonitor=false", "core.sshCommand=false",
                     "core.pager=cat", "credential.helper=", "core.askPass=", "protocol.allow=never",
                     "protocol.file.allow=never", "protocol.ext.allow=never", "protocol.https.allow=always",
                     "submodule.recurse=false", "gc.auto=0"):
        assert required in settings, required
    assert "protocol.http.allow=always" not in settings
    insecure = gitsvc.GitRunner(config.defaults().replace(allow_insecure_transport=True), "/x", str(tmp_path))
    assert "protocol.http.allow=always" in insecure.argv(["ls-remote"])


def _seed(tmp_path):
    """A repository made by plain git, then turned into the agent's layout (private git dir)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    src = tmp_path / "src"
    subprocess.run(["git", "init", "-q", "-b", "main", str(src)], env=env, check=True)
    (src / "a.txt").write_text("one\n")
    (src / ".gitattributes").write_text("* filter=evil\n")
    subprocess.run(["git", "add", "-A"], cwd=src, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", "one"], cwd=src, env=env, check=True)
    service = _service(tmp_path)
    tree = service.tree("svc")
    os.makedirs(os.path.dirname(tree.git_dir))
    os.makedirs(os.path.dirname(tree.work_tree))
    os.rename(src / ".git", tree.git_dir)
    os.rename(src, tree.work_tree)
    for name in set(os.listdir(tree.git_dir)) - gitsvc.GIT_DIR_ENTRIES:   # sample hooks, info/...
        path = os.path.join(tree.git_dir, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
    with open(os.path.join(tree.git_dir, "config"), "wb") as handle:
        handle.write(gitsvc.expected_config("https://git.test/a.git"))
    return service, tree


def _plant_hooks(git_dir, markers):
    """Hooks, an fsmonitor and programs in the config, each touching a marker when run."""
    markers.mkdir()
    hooks = os.path.join(git_dir, "hooks")
    os.makedirs(hooks, exist_ok=True)
    names = ("post-checkout", "reference-transaction", "post-index-change", "pre-auto-gc", "pre-commit")
    for name in names:
        script = os.path.join(hooks, name)
        with open(script, "w") as handle:
            handle.write(f"#!/bin/sh\ntouch {markers}/{name}\n")
        os.chmod(script, 0o755)
    with open(os.path.join(git_dir, "config"), "a") as handle:
        handle.write(f"[core]\n\tfsmonitor = {hooks}/post-checkout\n\tpager = touch {markers}/pager\n"
                     f"\thooksPath = {hooks}\n\teditor = touch {markers}/editor\n"
                     f"[credential]\n\thelper = !touch {markers}/credential\n")
    return names


def test_hooks_and_programs_in_a_tampered_repository_never_run(tmp_path):
    """The -c overrides alone (the config check aside): checkout, reset, clean, rev-parse and log
    on a repository whose hooks and config were planted run none of them."""
    service, tree = _seed(tmp_path)
    markers = tmp_path / "markers"
    _plant_hooks(tree.git_dir, markers)
    (tmp_path / "apps" / "svc" / "a.txt").write_text("changed\n")
    (tmp_path / "apps" / "svc" / "junk").write_text("untracked\n")
    run = service.runner.run
    for args in (["checkout", "-q", "--force", "--detach", "HEAD"], ["reset", "-q", "--hard", "HEAD"],
                 ["clean", "-ffdxq"], ["rev-parse", "HEAD"], ["status", "--short"]):
        run(args, tree)
    assert service.describe(tree)["commit_message"] == "one"
    assert (tmp_path / "apps" / "svc" / "a.txt").read_text() == "one\n"
    assert not (tmp_path / "apps" / "svc" / "junk").exists()
    assert sorted(os.listdir(markers)) == []
    # the control: plain git in the same tree runs what was planted
    subprocess.run(["git", f"--git-dir={tree.git_dir}", f"--work-tree={tree.work_tree}", "checkout", "-q",
                    "--force", "--detach", "HEAD"], cwd=tree.work_tree, env=service.runner.environment(),
                   check=True)
    assert "post-checkout" in os.listdir(markers)


def test_a_clean_tree_is_trusted(tmp_path):
    service, tree = _seed(tmp_path)
    assert gitsvc.untrusted_reason(tree, "https://git.test/a.git", service.uid) is None
    assert gitsvc.untrusted_reason(tree, "https://git.test/a.git", service.uid + 1).startswith(".")
    other = gitsvc.Tree(str(tmp_path / "none.git"), tree.work_tree)
    assert gitsvc.untrusted_reason(other, "https://git.test/a.git", service.uid) == gitsvc.NO_CLONE


def _reason_after(tmp_path, change):
    service, tree = _seed(tmp_path)
    change(tree)
    return gitsvc.untrusted_reason(tree, "https://git.test/a.git", service.uid)


@pytest.mark.parametrize("change,expected", [
    (lambda t: os.makedirs(os.path.join(t.work_tree, ".git", "hooks")), "a .git"),
    (lambda t: open(os.path.join(t.work_tree, ".git"), "w").write("gitdir: /tmp\n"), "a .git"),
    (lambda t: open(os.path.join(t.git_dir, "config"), "a").write("[core]\n\tfsmonitor = x\n"), "git config"),
    (lambda t: open(os.path.join(t.git_dir, "config"), "a").write("[include]\n\tpath = /tmp/x\n"), "git config"),
    (lambda t: os.makedirs(os.path.join(t.git_dir, "hooks")), "unexpected hooks"),
    (lambda t: open(os.path.join(t.git_dir, "commondir"), "w").write("/tmp\n"), "unexpected commondir"),
    (lambda t: open(os.path.join(t.git_dir, "index.lock"), "w").close(), "unexpected index.lock"),
    (lambda t: (os.makedirs(os.path.join(t.git_dir, "objects", "info"), exist_ok=True),
                open(os.path.join(t.git_dir, "objects", "info", "alternates"), "w").write("/tmp\n")), "alternates"),
    (lambda t: os.symlink("/etc/passwd", os.path.join(t.git_dir, "refs", "evil")), "not a regular file"),
    (lambda t: os.mkfifo(os.path.join(t.git_dir, "refs", "fifo")), "not a regular file"),
    (lambda t: shutil.rmtree(t.work_tree), "work tree is missing"),
])
def test_a_tampered_tree_is_not_trusted(tmp_path, change, expected):
    reason = _reason_after(tmp_path, change)
    assert reason is not None and expected in reason, reason


def test_a_file_of_another_owner_is_not_trusted(tmp_path):
    service, tree = _seed(tmp_path)
    reason = gitsvc.untrusted_reason(tree, "https://git.test/a.git", service.uid + 4242)
    assert reason is not None and f"owned by uid {service.uid}" in reason


def test_another_repository_or_credentials_in_the_url_are_not_trusted(tmp_path):
    service, tree = _seed(tmp_path)
    assert "git config" in gitsvc.untrusted_reason(tree, "https://git.test/b.git", service.uid)
    with open(os.path.join(tree.git_dir, "config"), "wb") as handle:
        handle.write(gitsvc.expected_config("https://x:oldtoken@git.test/a.git"))
    assert "git config" in gitsvc.untrusted_reason(tree, "https://git.test/a.git", service.uid)


def test_remove_deletes_the_work_tree_and_the_git_dir(tmp_path):
    service, tree = _seed(tmp_path)
    assert service.remove("svc") is True
    assert not os.path.exists(tree.work_tree) and not os.path.exists(tree.git_dir)
    assert service.remove("svc") is False


def test_a_commit_already_in_the_repository_is_checked_out_without_fetching(tmp_path):
    """A redeploy of the running commit: its remote (unreachable here) is never asked, the work
    tree is still reset to the commit."""
    service, tree = _seed(tmp_path)
    head = service.runner.run(["rev-parse", "HEAD"], tree).strip()
    (tmp_path / "apps" / "svc" / "a.txt").write_text("changed\n")
    service._checkout(tree, None, "main", head, None)
    assert (tmp_path / "apps" / "svc" / "a.txt").read_text() == "one\n"
    with pytest.raises(AgentError):       # a commit that is not here still needs the remote
        service._checkout(tree, None, "main", "f" * 40, None)
