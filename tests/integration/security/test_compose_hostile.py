"""Hostile compose files on the real engine (issue 17 item 1, docs/compose.md): one per route
from a repository to the host. Each deploy is refused with failed_precondition naming the key,
and the engine runs exactly what it ran before: no container of the project, running or not.
A control deploys the same project without the hostile part, and one route deploys with the
policy lifted to show that the route is real."""
import os

import docker.errors
import pytest

from tests.integration.security.secsupport import (BASE, deploy, make_cfg, project_containers, push, running,
                                                  start_agent)

FOREIGN = "sec-foreign"

# id -> (compose file appended to BASE or replacing it, extra files, symlinks, words of the error)
ROUTES = {
    "secret-socket": (BASE + "    secrets: [engine]\nsecrets:\n  engine:\n    file: @SOCK@\n", {}, {},
                      ["secrets.engine file", "@SOCK@"]),
    "config-agent-key": (BASE + "    configs: [key]\nconfigs:\n  key:\n    file: @KEY@\n", {}, {},
                         ["configs.key file", "agent.key"]),
    "device-cgroup-rules": (BASE + "    device_cgroup_rules: ['b 7:* rmw', 'b 8:* rmw']\n", {}, {},
                            ["device_cgroup_rules"]),
    "devices": (BASE + "    devices: ['/dev/loop0:/dev/loop0']\n", {}, {}, ["devices"]),
    "cap-add": (BASE + "    cap_add: [SYS_ADMIN]\n", {}, {}, ["cap_add"]),
    "volumes-from-foreign": (BASE + f"    volumes_from: ['container:{FOREIGN}:ro']\n", {}, {},
                             ["volumes_from", f"container:{FOREIGN}"]),
    "network-mode-container": (BASE + f"    network_mode: 'container:{FOREIGN}'\n", {}, {},
                               ["network_mode", f"container:{FOREIGN}"]),
    "pid-host": (BASE + "    pid: host\n", {}, {}, ["pid", "'host'"]),
    "external-links": (BASE + f"    external_links: ['{FOREIGN}:db']\n", {}, {}, ["external_links"]),
    "build-context-outside": (BASE.replace("    image: pulseup-test/appbase:latest\n",
                                           "    build: {context: @OUTSIDE@}\n"), {}, {},
                              ["build.context", "@OUTSIDE@"]),
    "build-dockerfile-outside": (BASE.replace("    image: pulseup-test/appbase:latest\n",
                                              "    build: {context: ., dockerfile: @OUTSIDE@/Dockerfile}\n"),
                                 {}, {}, ["build.dockerfile"]),
    # FIFOs: had compose opened them, the deploy would hang until the config deadline
    "env-file-outside": (BASE + "    env_file: @OUTSIDE@/secret.env\n", {}, {}, ["env_file", "secret.env"]),
    "extends-outside": (BASE + "    extends: {file: @OUTSIDE@/base.yml, service: base}\n", {}, {},
                        ["extends.file", "base.yml"]),
    "extends-chain-env-file": (BASE + "    extends: {file: sub/base.yml, service: base}\n",
                               {"sub/base.yml": "services:\n  base:\n    env_file: @OUTSIDE@/secret.env\n"},
                               {}, ["service base env_file", "secret.env"]),
    "symlink-bind-outside": (BASE + "    volumes: ['./data:/data']\n", {}, {"data": "@OUTSIDE@"},
                             ["volumes", "outside the repository"]),
    "symlink-secret-socket": (BASE + "    secrets: [s]\nsecrets:\n  s:\n    file: ./innocent.txt\n", {},
                              {"innocent.txt": "@SOCK@"}, ["secrets.s file", "outside the repository"]),
    "bind-git": (BASE + "    volumes: ['./.git:/repo-git']\n", {}, {}, ["volumes", ".git"]),
    "bind-git-hooks-long": (BASE + "    volumes:\n      - {type: bind, source: ./.git/hooks, target: /h}\n",
                            {}, {}, ["volumes", ".git"]),
    "bind-propagation": (BASE + "    volumes:\n      - {type: bind, source: ./app, target: /a, "
                                "bind: {propagation: rshared}}\n", {"app/x": "x\n"}, {}, ["volumes", "rshared"]),
    "volume-driver-opts-bind": (BASE + "    volumes: ['data:/data']\nvolumes:\n  data:\n    driver_opts: "
                                       "{type: none, o: bind, device: @OUTSIDE@}\n", {}, {},
                                ["volume data driver_opts", "volume device"]),
    "external-volume": (BASE + "    volumes: ['data:/data']\nvolumes:\n  data:\n    external: true\n"
                               "    name: pulseup-other_db\n", {}, {}, ["volume data", "external"]),
    "external-network": (BASE + "    networks: [other]\nnetworks:\n  other:\n    external: true\n"
                                "    name: pulseup-other_default\n", {}, {}, ["network other", "external"]),
    "anchor-hides-privileged": ("x-base: &base\n  privileged: true\n" + BASE + "    <<: *base\n", {}, {},
                                ["privileged"]),
    "anchor-hides-socket-bind": ("x-mounts: &mounts\n  - @SOCK@:/var/run/docker.sock\n" + BASE
                                 + "    volumes: *mounts\n", {}, {}, ["volumes", "@SOCK@"]),
    "interpolation-from-dot-env": (BASE + "    volumes: ['${HOSTDIR:-./static}:/host']\n",
                                   {".env": "HOSTDIR=/\n"}, {}, ["volumes", "outside the repository"]),
    "automatic-override": (BASE, {"docker-compose.override.yml": "services:\n  web:\n    privileged: true\n"},
                           {}, ["privileged"]),
    "alias-on-pulseup-net": (BASE + "    networks:\n      default:\n      pulseup-net: {aliases: [pulseup-caddy]}\n"
                             "networks:\n  pulseup-net: {external: true}\n", {}, {}, ["networks.pulseup-net"]),
    "reserved-service-name": (BASE.replace("  web:", "  pulseup-db-victim:"), {}, {},
                              ["service pulseup-db-victim", "reserved"]),
    "retag-another-services-image": (BASE.replace("image: pulseup-test/appbase:latest",
                                                  "image: pulseup-app-victim:latest\n    build: ./app"),
                                     {"app/Dockerfile": "FROM pulseup-test/appbase:latest\n"}, {},
                                     ["image", "pulseup-app-victim:latest", "another service"]),
    "unknown-key": (BASE + "    use_api_socket: true\n", {}, {}, ["use_api_socket", "allowed list"]),
}


@pytest.fixture(scope="module")
def foreign(docker_client, app_base_image):
    """A container of somebody else on the same engine, with a volume."""
    container = docker_client.containers.run(app_base_image, ["sh", "-c", "while true; do sleep 1; done"],
                                             name=FOREIGN, detach=True, volumes=["/foreign-data"])
    try:
        yield container
    finally:
        container.remove(force=True)


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """A host directory outside every clone, with what the hostile files point at. The files
    that compose would read while resolving are FIFOs: reading one blocks, so a deploy that
    opened them would end at the config deadline instead of being refused at once."""
    path = tmp_path_factory.mktemp("outside")
    os.mkfifo(path / "secret.env")
    os.mkfifo(path / "base.yml")
    (path / "Dockerfile").write_text("FROM pulseup-test/appbase:latest\n")
    return str(path)


def substitute(text, agent, outside_dir):
    for token, value in (("@SOCK@", agent.cfg.docker_host.split("://", 1)[1]), ("@OUTSIDE@", outside_dir),
                         ("@KEY@", os.path.join(agent.cfg.cert_dir, "agent.key"))):
        text = text.replace(token, value)
    return text


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_hostile_compose_file_is_refused_and_nothing_runs(route, sec_agent, git_server, docker_client, engine,
                                                          foreign, outside):
    compose, files, symlinks, words = ROUTES[route]
    uid = f"sec-{route}"
    engine(uid)
    files = {"docker-compose.yml": compose, "static/index.html": "hi\n", **files}
    files = {path: substitute(text, sec_agent, outside) for path, text in files.items()}
    sha = push(git_server, uid, files, {k: substitute(v, sec_agent, outside) for k, v in symlinks.items()})
    before = running(docker_client)

    reply = deploy(sec_agent, git_server, uid, sha)

    assert reply["success"] is False and reply["code"] == "failed_precondition", reply
    for word in words:
        assert substitute(word, sec_agent, outside) in reply["error"], reply["error"]
    assert "PULSEUP_COMPOSE_ALLOW_PRIVILEGED" in reply["error"]
    assert project_containers(docker_client, uid) == []
    assert running(docker_client) == before
    foreign.reload()
    assert foreign.status == "running"
    statuses = [e["status"] for e in sec_agent.events_named("update_deployment_status")
                if e["service_uid"] == uid and e["status"] != "in_progress"]
    assert statuses == ["failed"]


def test_control_the_base_project_deploys(sec_agent, git_server, docker_client, engine):
    """The routes above differ from this project only by their hostile part."""
    uid = "sec-control"
    engine(uid)
    push(git_server, uid, {"docker-compose.yml": BASE + "    volumes: ['./static:/static:ro']\n",
                           "static/index.html": "hi\n"})
    reply = deploy(sec_agent, git_server, uid)
    assert reply["success"], reply
    [container] = project_containers(docker_client, uid)
    assert container.status == "running"
    assert container.exec_run(["cat", "/static/index.html"]).output == b"hi\n"
    deleted = sec_agent.call("service.delete", {"service_uid": uid})
    assert deleted["success"], deleted
    assert project_containers(docker_client, uid) == []


def test_with_the_policy_lifted_the_socket_route_is_real(tmp_path, docker_host, docker_client, git_server,
                                                         app_base_image, test_network, engine, outside):
    """PULSEUP_COMPOSE_ALLOW_PRIVILEGED=true: the secret that is the engine's socket arrives in
    the container, which is what the refusal above prevents."""
    uid = "sec-lifted"
    engine(uid)
    agent = start_agent(make_cfg(str(tmp_path), docker_host, git_server, pulseup_compose_allow_privileged=True))
    try:
        compose, _, _, _ = ROUTES["secret-socket"]
        push(git_server, uid, {"docker-compose.yml": substitute(compose, agent, outside)})
        reply = deploy(agent, git_server, uid)
        assert reply["success"], reply
        [container] = project_containers(docker_client, uid)
        listing = container.exec_run(["ls", "-l", "/run/secrets/engine"]).output.decode()
        assert listing.startswith("s"), listing      # a socket: the engine, reachable from inside
        assert agent.call("service.delete", {"service_uid": uid})["success"]
    finally:
        agent.close()


def test_delete_after_a_refused_commit_keeps_another_projects_volume(sec_agent, git_server, docker_client, engine):
    """The refused commit stays in the clone; service.delete with delete_volumes must not run
    ``down --volumes`` on it, which would remove the volume its file names."""
    uid = "sec-delete-foreign-volume"
    engine(uid)
    foreign_volume = docker_client.volumes.create("pulseup-other_db")
    try:
        good = BASE + "    volumes: ['data:/data']\nvolumes:\n  data:\n"
        push(git_server, uid, {"docker-compose.yml": good})
        assert deploy(sec_agent, git_server, uid)["success"]
        hostile = git_server.commit(uid, {"docker-compose.yml": good + "    name: pulseup-other_db\n"})
        refused = deploy(sec_agent, git_server, uid, hostile)
        assert refused["code"] == "failed_precondition" and "pulseup-other_db" in refused["error"], refused
        deleted = sec_agent.call("service.delete", {"service_uid": uid, "delete_volumes": True})
        assert deleted["success"], deleted
        assert project_containers(docker_client, uid) == []
        foreign_volume.reload()              # raises NotFound if it was removed
        own = docker_client.volumes.list(filters={"label": f"com.docker.compose.project=pulseup-{uid}"})
        assert own == []
    finally:
        try:
            foreign_volume.remove(force=True)
        except docker.errors.NotFound:
            pass


def test_project_name_of_another_service_is_refused(sec_agent, git_server, docker_client, engine, app_base_image):
    """docker_compose_project_name naming another service's project: ``up --remove-orphans``
    would replace or remove that service's containers."""
    uid = "sec-project-hijack"
    engine(uid)
    victim = docker_client.containers.run(
        app_base_image, ["sh", "-c", "while true; do sleep 1; done"], name="pulseup-victim_web_1", detach=True,
        labels={"com.docker.compose.project": "pulseup-victim", "com.docker.compose.service": "web",
                "pulseup.managed": "true", "pulseup.service_uid": "victim"})
    try:
        push(git_server, uid, {"docker-compose.yml": BASE})
        reply = deploy(sec_agent, git_server, uid, docker_compose_project_name="pulseup-victim")
        assert reply["code"] == "failed_precondition" and "pulseup-victim_web_1" in reply["error"], reply
        victim.reload()
        assert victim.status == "running"
        assert [c.id for c in project_containers(docker_client, "victim")] == [victim.id]
    finally:
        victim.remove(force=True)
