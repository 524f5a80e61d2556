"""Issue 17 item 2 on the real engine and git server: a container with the work tree
bind-mounted (the common ``.:/app``) plants hooks and config as root; the next deploys run none
of them and still deploy the requested commit (docs/security.md, "Git")."""
import logging
import os
import shlex
import subprocess

import requests

from agent.services.git import repository_dir
from harness.gitserver import APP_DOCKERFILE

HTTP = requests.Session()
HTTP.trust_env = False

HOOKS = ("post-checkout", "pre-commit", "reference-transaction", "post-merge", "post-rewrite", "pre-auto-gc",
         "post-index-change", "fsmonitor-watchman", "pre-push", "push-to-checkout", "post-update")


def _hostile_config(markers, hooks_dir, git_port):
    touch = f"touch {markers}"
    return (f"[core]\n\tfsmonitor = {hooks_dir}/fsmonitor-watchman\n\thooksPath = {hooks_dir}\n"
            f"\tpager = {touch}/pager\n\tsshCommand = {touch}/ssh\n\teditor = {touch}/editor\n"
            f"\tworktree = /\n"
            f"[filter \"evil\"]\n\tclean = {touch}/filter-clean\n\tsmudge = {touch}/filter-smudge\n"
            f"\tprocess = {touch}/filter-process\n"
            f"[diff]\n\texternal = {touch}/diff\n"
            f"[credential]\n\thelper = !{touch}/credential\n"
            f"[protocol]\n\tallow = always\n"
            f"[url \"ext::sh -c touch% {markers}/ext% #\"]\n\tinsteadOf = http://127.0.0.1:{git_port}/\n"
            f"[include]\n\tpath = {hooks_dir}/extra.cfg\n")


def _plant_script(git_dir, markers, hooks_dir, git_port):
    """A shell script that plants hooks and a hostile config into ``git_dir`` (as seen inside
    the container), each program touching a marker file on the host when run."""
    lines = ["set -e", f"mkdir -p {shlex.quote(git_dir)}/hooks {shlex.quote(git_dir)}/info"]
    for hook in HOOKS:
        path = shlex.quote(f"{git_dir}/hooks/{hook}")
        lines += [f"printf '#!/bin/sh\\ntouch %s\\n' {shlex.quote(f'{markers}/{hook}')} > {path}",
                  f"chmod 755 {path}"]
    config = _hostile_config(markers, hooks_dir, git_port)
    lines += [f"printf '%s' {shlex.quote(config)} >> {shlex.quote(git_dir)}/config",
              f"printf '[core]\\n\\thooksPath = %s\\n' {shlex.quote(hooks_dir)} > {shlex.quote(git_dir)}/hooks/extra.cfg",
              f"printf '* filter=evil\\n' > {shlex.quote(git_dir)}/info/attributes"]
    return "\n".join(lines) + "\n"


def _run_hostile(docker_client, image, uid, clone, script):
    """The service's own container, running as root with the work tree at /app."""
    docker_client.containers.run(image, ["sh", "-c", script], volumes={clone: {"bind": "/app", "mode": "rw"}},
                                 labels={"pulseup.service_uid": uid}, network_mode="none", remove=True)


def _deploy(agent, git_server, uid, dep, sha):
    return agent.call("service.app.deploy", {
        "service_uid": uid, "deployment_uid": dep, "github_repo": f"{git_server.base_url}/{uid}.git",
        "access_token": git_server.token, "github_branch": "main", "commit_sha": sha, "internal_port": 8080,
        "drain_seconds": 0, "health_timeout_seconds": 30})


def _answer(docker_client, name):
    container = docker_client.containers.get(name)
    address = container.attrs["NetworkSettings"]["Networks"]["pulseup-net"]["IPAddress"]
    return HTTP.get(f"http://{address}:8080/", timeout=5).text


def _discards(caplog):
    return [r.getMessage() for r in caplog.records if "discarding the source" in r.getMessage()]


def test_planted_hooks_and_config_never_run(deploy_agent, git_server, docker_client, app_base_image,
                                            cleanup_service, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="agent")
    uid = "planted-app"
    cleanup_service(uid)
    markers = tmp_path / "markers"
    markers.mkdir()
    _, sha1 = git_server.add_repo(uid, {"Dockerfile": APP_DOCKERFILE, "index.html": "one\n"})
    shas = [git_server.commit(uid, {"index.html": f"{n}\n"}, message=n) for n in ("two", "three", "four")]
    first = _deploy(deploy_agent, git_server, uid, "p-1", sha1)
    assert first["success"], first
    clone = first_clone = os.path.join(deploy_agent.cfg.apps_dir, uid)
    git_dir = repository_dir(deploy_agent.cfg, uid)

    # 1. the container plants a whole .git (hooks, hostile config, attributes) in the work
    #    tree, an untracked .gitattributes using the filter, and changes a tracked file
    script = _plant_script("/app/.git", markers, f"{clone}/.git/hooks", git_server.port)
    script += "printf '* filter=evil\\n' > /app/.gitattributes\nprintf 'hacked\\n' > /app/index.html\n"
    _run_hostile(docker_client, app_base_image, uid, clone, script)
    assert os.stat(os.path.join(clone, ".git", "hooks", "post-checkout")).st_uid == 0
    second = _deploy(deploy_agent, git_server, uid, "p-2", shas[0])
    assert second["success"], second
    assert second["data"]["commit_sha"] == shas[0]
    assert _answer(docker_client, second["data"]["container_name"]) == "two\n"
    assert not os.path.lexists(os.path.join(clone, ".git")) and not os.path.exists(os.path.join(clone, ".gitattributes"))
    assert any("a .git the agent did not make" in m for m in _discards(caplog)), _discards(caplog)

    # 2. the same plants in the private git directory itself (out of any container's reach)
    plant = _plant_script(git_dir, markers, f"{git_dir}/hooks", git_server.port)
    subprocess.run(["sh", "-c", plant], check=True)
    third = _deploy(deploy_agent, git_server, uid, "p-3", shas[1])
    assert third["success"], third
    assert third["data"]["commit_sha"] == shas[1]
    assert any("git config is not the one the agent wrote" in m for m in _discards(caplog))

    # 3. one file of the git directory owned by another uid
    victim = os.path.join(git_dir, "HEAD")
    os.chown(victim, 4242, 4242)
    fourth = _deploy(deploy_agent, git_server, uid, "p-4", shas[2])
    assert fourth["success"], fourth
    assert fourth["data"]["commit_sha"] == shas[2]
    assert _answer(docker_client, fourth["data"]["container_name"]) == "four\n"
    assert any("owned by uid 4242" in m for m in _discards(caplog))
    assert os.stat(os.path.join(git_dir, "HEAD")).st_uid == os.geteuid()

    assert sorted(os.listdir(markers)) == []          # nothing planted ever ran
    assert clone == first_clone and len(_discards(caplog)) == 3
    running = docker_client.containers.list(filters={"label": f"pulseup.service_uid={uid}"})
    assert [c.name for c in running] == [fourth["data"]["container_name"]]
