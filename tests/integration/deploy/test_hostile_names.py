"""Whatever a repository holds, the agent answers the next call (issue 16): file names that are
not UTF-8, hold control characters or are as long as the file system allows are deployed past,
and the events about them can always be sent."""

from harness.gitserver import APP_DOCKERFILE

from agent.protocol import envelope

ODD_NAMES = {
    "Dockerfile.\udcff": "FROM scratch\n",          # the bytes b"Dockerfile.\xff"
    "dir\udcfe/Dockerfile": "FROM scratch\n",
    "odd\nname.dockerfile": "FROM scratch\n",
    "ctl\x01.txt": "x\n",
    "x" * 240 + ".dockerfile": "FROM scratch\n",
}


def test_a_repository_with_odd_file_names_deploys_and_the_agent_answers_on(
        deploy_agent, git_server, app_base_image, cleanup_service):
    uid = "odd-names"
    cleanup_service(uid)
    _, sha = git_server.add_repo(uid, {"Dockerfile": APP_DOCKERFILE, "index.html": "odd\n", **ODD_NAMES})
    reply = deploy_agent.call("service.app.deploy", {
        "service_uid": uid, "deployment_uid": "odd-1", "github_repo": f"{git_server.base_url}/{uid}.git",
        "access_token": git_server.token, "github_branch": "main", "commit_sha": sha, "internal_port": 8080,
        "drain_seconds": 0, "health_timeout_seconds": 30})
    assert reply["success"], reply
    configs = deploy_agent.events_named("update_docker_config")
    assert configs, "no update_docker_config event"
    paths = configs[-1]["dockerfile_paths"]
    assert "Dockerfile" in paths and "odd\nname.dockerfile" in paths and "x" * 240 + ".dockerfile" in paths
    assert not any("\udcff" in p or "\udcfe" in p for p in paths)
    envelope.encode(configs[-1])                    # every event it sent can be written
    assert deploy_agent.call("agent.ping", {})["success"] is True
