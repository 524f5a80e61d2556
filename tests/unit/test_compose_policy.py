"""The compose allow-list (agent/services/compose_policy.py, docs/compose.md): every key,
every field that can reach a host path, device, container or file, on raw files and on the
resolved document."""

import os
import re

import pytest

from agent.errors import AgentError
from agent.services import compose_fields
from agent.services import compose_policy as policy

DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "compose.md")


@pytest.fixture
def clone(tmp_path):
    root = tmp_path / "clone"
    (root / ".git" / "hooks").mkdir(parents=True)
    (root / "static").mkdir()
    (root / "sub").mkdir()
    (root / "env").write_text("A=b\n")
    return root


def resolved(clone, service=None, project="pulseup-x", **sections):
    document = {"services": {"web": service or {"image": "busybox"}, "db": {"image": "busybox"}}}
    document.update(sections)
    policy.check_resolved(document, str(clone), str(clone), project)


def refused(call, *words):
    with pytest.raises(AgentError) as err:
        call()
    assert err.value.code == "failed_precondition"
    assert "PULSEUP_COMPOSE_ALLOW_PRIVILEGED" in err.value.message
    for word in words:
        assert word in err.value.message, err.value.message
    return err.value.message


@pytest.mark.parametrize("service, words", [
    ({"privileged": True}, ["privileged"]),
    ({"cap_add": ["SYS_ADMIN"]}, ["cap_add"]),
    ({"devices": ["/dev/sda:/dev/sda"]}, ["devices"]),
    ({"device_cgroup_rules": ["b 8:* rmw"]}, ["device_cgroup_rules"]),
    ({"cgroup_parent": "/system.slice"}, ["cgroup_parent"]),
    ({"credential_spec": {"file": "/etc/x"}}, ["credential_spec"]),
    ({"external_links": ["redis_1:redis"]}, ["external_links"]),
    ({"gpus": "all"}, ["gpus"]),
    ({"use_api_socket": True}, ["use_api_socket"]),
    ({"models": ["m"]}, ["models"]),
    ({"security_opt": ["apparmor=unconfined"]}, ["security_opt"]),
    ({"security_opt": ["seccomp=/etc/profile.json"]}, ["security_opt"]),
    ({"runtime": "runsc"}, ["runtime"]),
    ({"volume_driver": "nfs"}, ["volume_driver"]),
    ({"logging": {"driver": "splunk", "options": {"splunk-capath": "/etc/x"}}}, ["logging"]),
    ({"blkio_config": {"device_read_bps": [{"path": "/dev/sda", "rate": 1}]}}, ["blkio_config", "device_read_bps"]),
    ({"deploy": {"resources": {"reservations": {"devices": [{"capabilities": ["gpu"]}]}}}}, ["devices"]),
    ({"post_start": [{"command": "id", "privileged": True}]}, ["post_start"]),
    ({"network_mode": "host"}, ["network_mode", "'host'"]),
    ({"network_mode": "container:foreign"}, ["network_mode", "container:foreign"]),
    ({"network_mode": "pulseup-other_default"}, ["network_mode"]),
    ({"network_mode": "service:nope"}, ["network_mode", "'nope'"]),
    ({"pid": "host"}, ["pid"]), ({"pid": "container:abc"}, ["pid"]),
    ({"ipc": "host"}, ["ipc"]), ({"ipc": "container:abc"}, ["ipc"]),
    ({"uts": "host"}, ["uts"]), ({"userns_mode": "host"}, ["userns_mode"]),
    ({"cgroup": "host"}, ["cgroup"]),
    ({"volumes_from": ["container:foreign:ro"]}, ["volumes_from", "container:foreign"]),
    ({"volumes_from": ["other"]}, ["volumes_from", "'other'"]),
    ({"links": ["foreign:alias"]}, ["links", "'foreign'"]),
    ({"volumes": ["/var/run/docker.sock:/s"]}, ["volumes", "/var/run/docker.sock"]),
    ({"volumes": ["/var/run:/var/run"]}, ["/var/run"]),
    ({"volumes": ["~/x:/y"]}, ["volumes", "~/x"]),
    ({"volumes": ["../outside:/x"]}, ["volumes", "outside"]),
    ({"volumes": ["./.git:/g"]}, ["volumes", ".git"]),
    ({"volumes": ["./.git/hooks:/h"]}, ["volumes", ".git"]),
    ({"volumes": ["./static:/s:rshared"]}, ["volumes", "rshared"]),
    ({"volumes": [{"type": "bind", "source": "/etc", "target": "/x"}]}, ["volumes", "/etc"]),
    ({"volumes": [{"type": "bind", "source": "./static", "target": "/x", "bind": {"propagation": "shared"}}]},
     ["volumes", "shared"]),
    ({"volumes": [{"type": "npipe", "source": "x", "target": "/x"}]}, ["volumes", "npipe"]),
    ({"volumes": ["/etc/$$x:/y"]}, ["volumes", "/etc/$x"]),
    ({"volumes": ["/etc/${X}:/y"]}, ["volumes", "unresolved"]),
    ({"env_file": ["/etc/environment"]}, ["env_file"]),
    ({"env_file": [{"path": "../x.env", "required": False}]}, ["env_file"]),
    ({"label_file": "/etc/labels"}, ["label_file"]),
    ({"extends": {"file": "/etc/compose.yml", "service": "x"}}, ["extends.file"]),
    ({"build": "/etc"}, ["build.context", "/etc"]),
    ({"build": "https://example.test/repo.git"}, ["build.context", "remote"]),
    ({"build": {"context": ".", "dockerfile": "../../Dockerfile"}}, ["build.dockerfile"]),
    ({"build": {"context": ".", "dockerfile": "/etc/Dockerfile"}}, ["build.dockerfile"]),
    ({"build": {"context": ".", "additional_contexts": {"x": "/etc"}}}, ["additional_contexts.x"]),
    ({"build": {"context": ".", "additional_contexts": ["x=https://example.test/r.git"]}}, ["additional_contexts"]),
    ({"build": {"context": ".", "ssh": ["default"]}}, ["build.ssh"]),
    ({"build": {"context": ".", "ssh": {"key": "/root/.ssh/id_rsa"}}}, ["build.ssh.key"]),
    ({"build": {"context": ".", "cache_from": ["type=local,src=/etc"]}}, ["build.cache_from"]),
    ({"build": {"context": ".", "cache_to": ["type=local,dest=/tmp/x"]}}, ["build.cache_to"]),
    ({"build": {"context": ".", "network": "host"}}, ["build.network"]),
    ({"build": {"context": ".", "privileged": True}}, ["build", "'privileged'"]),
    ({"build": {"context": ".", "entitlements": ["network.host"]}}, ["build", "'entitlements'"]),
    ({"unknown_key": 1}, ["unknown_key", "allowed list"]),
    ({"container_name": "pulseup-db-victim"}, ["container_name", "reserved"]),
    ({"init": "/usr/bin/evil-init"}, ["init", "true or false"]),
    ({"image": "pulseup-app-victim:abc123"}, ["image", "another service"]),
    ({"image": "localhost:5000/pulseup-app-victim"}, ["image", "another service"]),
    ({"image": "pulseup-app:victim"}, ["image", "another service"]),
    ({"image": "pulseup-victim_web:latest"}, ["image", "another service"]),
    ({"networks": {"pulseup-net": {"aliases": ["pulseup-victim-web"]}}}, ["networks.pulseup-net"]),
    ({"networks": {"pulseup-net": {"ipv4_address": "172.30.0.9"}}}, ["networks.pulseup-net"]),
])
def test_every_reaching_field_is_refused(clone, service, words):
    refused(lambda: resolved(clone, {"image": "busybox", **service}), *words)


@pytest.mark.parametrize("image", ["busybox", "docker.io/library/postgres:15", "pulseup-test/appbase:latest",
                                   "pulseup-x_web", "pulseup-x-db:1", "registry.test:5000/team/app@sha256:ab"])
def test_images_of_anyone_but_other_services_pass(clone, image):
    resolved(clone, {"image": image})


def test_refusals_escape_control_characters_and_stay_short(clone):
    document = {"services": {"web\nFORGED log line": {"image": "busybox", "devices": ["/dev/sda"]}}}
    message = refused(lambda: policy.check_resolved(document, str(clone), str(clone), "pulseup-x"), "web\\nFORGED")
    assert "\n" not in message
    long = {"services": {"web": {"image": "busybox", "volumes": ["/" + "a" * 5000 + ":/x"]}}}
    assert len(refused(lambda: policy.check_resolved(long, str(clone), str(clone), "pulseup-x"))) < 500


def test_service_names_of_the_agent_are_reserved(clone):
    document = {"services": {"pulseup-db-victim": {"image": "busybox"}}}
    refused(lambda: policy.check_resolved(document, str(clone), str(clone), "pulseup-x"), "reserved")


def test_symlink_in_the_clone_pointing_outside_is_refused(clone):
    os.symlink("/var/run", clone / "run")
    os.symlink(".git", clone / "innocent")
    refused(lambda: resolved(clone, {"volumes": [f"{clone}/run:/x"]}), "run", "outside")
    refused(lambda: resolved(clone, {"volumes": ["./innocent/hooks:/x"]}), ".git")
    refused(lambda: resolved(clone, secrets={"s": {"file": "./run/docker.sock"}}), "secrets.s", "outside")


def test_a_safe_project_passes(clone):
    service = {
        "image": "busybox", "build": {"context": ".", "dockerfile": "sub/Dockerfile", "args": {"A": "b"},
                                      "additional_contexts": {"img": "docker-image://busybox", "s": "./sub"},
                                      "x-note": 1,
                                      "network": "default"},
        "volumes": ["./static:/srv:ro", f"{clone}/sub:/sub", "data:/data", "/anonymous",
                    {"type": "volume", "source": "data", "target": "/d2"}, {"type": "tmpfs", "target": "/tmp"},
                    {"type": "bind", "source": "./static", "target": "/b", "bind": {"propagation": "rprivate"}}],
        "volumes_from": ["db", "service:db:ro"], "links": ["db:database"], "network_mode": "service:db",
        "pid": "service:db", "ipc": "shareable", "privileged": False, "cap_add": [], "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"], "logging": {"driver": "json-file", "options": {"max-size": "1m"}},
        "env_file": ["./env"], "secrets": ["s"], "configs": [{"source": "c", "target": "/c"}],
        "environment": {"A": "$$HOME"}, "deploy": {"resources": {"limits": {"cpus": "0.5"}}},
        "blkio_config": {"weight": 300}, "runtime": "runc", "x-anything": {"privileged": True},
        "container_name": "web-1", "networks": {"back": {"aliases": ["api"]}, "pulseup-net": None},
        "init": True,
    }
    bind = {"type": "none", "o": "bind,ro", "device": f"{clone}/static"}
    resolved(clone, service, volumes={"data": {"driver_opts": bind},
                                      "cache": {"driver_opts": {"type": "tmpfs", "device": "tmpfs"}},
                                      "named": {"name": "pulseup-x_named"}},
             networks={"pulseup-net": {"external": True, "name": "pulseup-net"}, "back": {"driver": "bridge"}},
             secrets={"s": {"file": f"{clone}/env", "labels": {"a": "b"}}, "e": {"environment": "A"}},
             configs={"c": {"file": "./static"}, "inline": {"content": "x"}})


@pytest.mark.parametrize("sections, words", [
    ({"volumes": {"d": {"driver_opts": {"type": "none", "o": "bind", "device": "/var/run"}}}},
     ["volume device", "/var/run"]),
    ({"volumes": {"d": {"driver_opts": {"type": "none", "o": "bind", "device": "./static"}}}}, ["absolute"]),
    ({"volumes": {"d": {"driver_opts": {"type": "ext4", "device": "/dev/sda1"}}}}, ["volume d", "'ext4'"]),
    ({"volumes": {"d": {"driver_opts": {"type": "nfs", "o": "addr=10.0.0.1", "device": ":/x"}}}}, ["'nfs'"]),
    ({"volumes": {"d": {"driver_opts": {"type": "none", "o": "bind,rshared", "device": "/x"}}}}, ["rshared"]),
    ({"volumes": {"d": {"external": True}}}, ["volume d", "external"]),
    ({"volumes": {"d": {"name": "pulseup-other_db"}}}, ["volume d", "pulseup-other_db"]),
    ({"volumes": {"d": {"driver": "rexray"}}}, ["volume d", "rexray"]),
    ({"networks": {"n": {"external": True, "name": "pulseup-other_default"}}}, ["network n", "external"]),
    ({"networks": {"n": {"external": {"name": "bridge"}}}}, ["network n", "external"]),
    ({"networks": {"n": {"name": "pulseup-other_default"}}}, ["network n", "pulseup-other_default"]),
    ({"networks": {"n": {"driver": "macvlan"}}}, ["network n", "macvlan"]),
    ({"networks": {"n": {"driver": "host"}}}, ["network n", "'host'"]),
    ({"networks": {"n": {"driver_opts": {"parent": "eth0"}}}}, ["network n", "driver_opts"]),
    ({"secrets": {"s": {"file": "/var/run/docker.sock"}}}, ["secrets.s file", "/var/run/docker.sock"]),
    ({"secrets": {"s": {"external": True}}}, ["secrets.s", "external"]),
    ({"configs": {"c": {"file": "/etc/pulseup-agent/certs/agent.key"}}}, ["configs.c file", "agent.key"]),
    ({"configs": {"c": {"file": "./.git/config"}}}, ["configs.c file", ".git"]),
    ({"include": ["/etc/compose.yml"]}, ["include path"]),
    ({"include": [{"path": "./sub/c.yml", "env_file": "/etc/environment"}]}, ["include env_file"]),
    ({"include": ["oci://registry.test/x"]}, ["include path", "remote"]),
    ({"models": {"m": {}}}, ["top-level key 'models'"]),
    ({"web": {"image": "busybox"}}, ["top-level key 'web'"]),
])
def test_top_level_sections(clone, sections, words):
    refused(lambda: resolved(clone, **sections), *words)


def test_the_table_covers_every_key_of_the_compose_spec_it_names():
    assert set(policy.SERVICE) >= {"build", "volumes", "volumes_from", "env_file", "extends", "devices",
                                   "device_cgroup_rules", "cgroup_parent", "network_mode", "pid", "ipc",
                                   "userns_mode", "links", "external_links", "secrets", "configs"}
    assert set(policy.TOP_LEVEL) == {"version", "name", "services", "networks", "volumes", "secrets",
                                     "configs", "include"}


def test_every_checked_key_has_a_check():
    checked = {key for key, verdict in policy.SERVICE.items() if verdict == policy.CHECKED}
    assert checked == set(compose_fields.SERVICE_CHECKS) | set(compose_fields.NAMESPACE_MODES)


def test_docs_table_matches_the_policy():
    """docs/compose.md lists every key with the verdict the code applies."""
    text = open(DOCS, encoding="utf-8").read()
    top, service = text.split("## Top-level keys")[1].split("## Service keys")
    for section, table in ((top, policy.TOP_LEVEL), (service, policy.SERVICE)):
        rows = dict(re.findall(r"^\| `([a-z_]+)` \| (accepted|checked|refused) \|", section, re.M))
        assert rows == table


# -- raw files --------------------------------------------------------------------------------

def write(path, text):
    path.write_text(text)
    return str(path)


def test_raw_anchor_and_merge_cannot_hide_a_key(clone):
    main = write(clone / "docker-compose.yml", "x-base: &base\n  image: busybox\n  device_cgroup_rules: ['b 8:* rmw']\n"
                 "services:\n  web:\n    <<: *base\n")
    refused(lambda: policy.check_raw([main], str(clone)), "device_cgroup_rules")


@pytest.mark.parametrize("service, words", [
    ("env_file: /etc/environment", ["env_file", "/etc/environment"]),
    ("env_file: ['./env', '../../outside.env']", ["env_file", "outside.env"]),
    ("env_file: ${HOME}/.env", ["env_file", "interpolation"]),
    ("env_file: [{path: ./.git/config}]", ["env_file", ".git"]),
    ("label_file: /etc/labels", ["label_file"]),
    ("extends: {file: /etc/compose.yml, service: x}", ["extends.file"]),
    ("extends: {file: '${X:-/etc}/c.yml', service: x}", ["extends.file", "interpolation"]),
    ("privileged: true", ["privileged"]),
])
def test_raw_only_fields_are_checked_before_compose_reads_them(clone, service, words):
    main = write(clone / "docker-compose.yml", f"services:\n  web:\n    image: busybox\n    {service}\n")
    refused(lambda: policy.check_raw([main], str(clone)), *words)


def test_raw_check_follows_extends_files(clone):
    write(clone / "sub" / "base.yml", "services:\n  base:\n    image: busybox\n    env_file: /etc/environment\n")
    main = write(clone / "docker-compose.yml",
                 "services:\n  web:\n    extends: {file: sub/base.yml, service: base}\n    env_file: ./env\n")
    refused(lambda: policy.check_raw([main], str(clone)), "env_file", "/etc/environment")
    write(clone / "sub" / "base.yml", "services:\n  base:\n    image: busybox\n    env_file: ../env\n"
          "    extends: {file: ../docker-compose.yml, service: web}\n")
    policy.check_raw([main], str(clone))     # relative to each file; a cycle ends


def test_raw_include_and_unreadable_files(clone):
    main = write(clone / "docker-compose.yml", "include: [/etc/compose.yml]\nservices: {}\n")
    refused(lambda: policy.check_raw([main], str(clone)), "include path")
    write(clone / "sub" / "inc.yml", "services:\n  other:\n    env_file: /etc/environment\n")
    main = write(clone / "docker-compose.yml", "include: [sub/inc.yml]\nservices: {}\n")
    refused(lambda: policy.check_raw([main], str(clone)), "service other env_file", "/etc/environment")
    bad = write(clone / "bad.yml", "services: [unclosed\n")
    refused(lambda: policy.check_raw([bad], str(clone)), "bad.yml", "YAML")
    big = write(clone / "big.yml", "services: {}\n" + "#" * (1 << 20))
    refused(lambda: policy.check_raw([big], str(clone)), "big.yml", "1 MiB")
    scalar = write(clone / "scalar.yml", "just text\n")
    refused(lambda: policy.check_raw([scalar], str(clone)), "mapping")
