"""Nixpacks build through the named stand-in (docs/support.md, "Build methods") on the private dockerd: tags, the
private config file, variables kept off argv."""
import json
import os

import pytest

from agent.services.nixpacks import NixpacksService

pytestmark = pytest.mark.integration
STANDIN_DIR = os.path.join(os.path.dirname(__file__), "standin")


def test_build_with_standin(tmp_path, docker_host, docker_client, app_base_image):
    from agent import config

    source = tmp_path / "app"
    source.mkdir()
    (source / "package.json").write_text(json.dumps({"scripts": {"start": "httpd -f -p 8080"}}))
    service = NixpacksService(config.defaults().replace(docker_host=docker_host),
                              search_path=STANDIN_DIR)
    plan = service.plan(str(source))
    lines = []
    secret = "s3cr3t-value-123"
    tags = ["pulseup-app:nix1", "pulseup-app-nix1:0123456789ab"]
    try:
        assert service.build(str(source), plan, tags, {"API_KEY": secret},
                             lambda text, level: lines.append(text)) == tags[0]
        image = docker_client.images.get(tags[1])
        assert set(tags) <= set(image.tags)
        assert image.attrs["Config"]["Cmd"] == ["sh", "-c", "httpd -f -p 8080"]
    finally:
        for tag in tags:
            docker_client.images.remove(tag, force=True)
    calls = [json.loads(line) for line in open(source / ".standin-nixpacks.log")]
    build = calls[-1]
    assert build["argv"][0] == "build" and secret not in " ".join(build["argv"])
    assert build["config"]["mode"] == "0o600"
    assert build["config"]["data"]["variables"]["API_KEY"] == secret
    config_path = build["argv"][build["argv"].index("--config") + 1]
    assert not os.path.exists(config_path)  # deleted afterwards
