"""Nixpacks method (the other non-Dockerfile build method beside compose): missing binary,
plan merging and runtime defaults, with the named stand-in `nixpacks` for its plan command."""

import json
import os

import pytest

from agent import config
from agent.errors import AgentError
from agent.services import nixpacks
from agent.services.nixpacks import NixpacksService

STANDIN_DIR = os.path.join(os.path.dirname(__file__), "..", "integration", "proxy", "standin")


def test_missing_nixpacks_is_failed_precondition_naming_the_install(tmp_path):
    service = NixpacksService(config.defaults(), search_path=str(tmp_path))
    with pytest.raises(AgentError) as err:
        service.plan(str(tmp_path))
    assert err.value.code == "failed_precondition"
    assert "install" in err.value.message and "nixpacks" in err.value.message


def test_plan_merges_config_commands_and_defaults(tmp_path):
    (tmp_path / "package.json").write_text(json.dumps({"scripts": {"start": "node server.js"}}))
    warnings = []
    service = NixpacksService(config.defaults(), search_path=STANDIN_DIR)
    plan = service.plan(str(tmp_path), {"phases": {"setup": {"aptPkgs": ["curl"]}},
                                        "variables": {"NODE_VERSION": "18"}},
                        {"build_command": "npm run build", "start_command": ""},
                        on_line=lambda text, level: warnings.append((level, text)))
    # the stand-in prints the real tool's pinned format: the provider is only in the metadata
    assert plan["providers"] == [] and plan["variables"]["NIXPACKS_METADATA"] == "node"
    assert plan["buildImage"].startswith("ghcr.io/railwayapp/nixpacks:")
    assert plan["phases"]["setup"]["nixPkgs"] == ["nodejs_18", "npm-9_x"]
    assert plan["phases"]["setup"]["aptPkgs"] == ["curl"]
    assert plan["phases"]["build"] == {"cmds": ["npm run build"]}
    assert plan["phases"]["install"]["cmds"] == ["npm ci"]
    assert plan["start"] == {"cmd": "node server.js"}
    assert plan["variables"]["NODE_VERSION"] == "18" and "NIXPACKS_NODE_VERSION" not in plan["variables"]
    assert warnings and warnings[0][0] == "WARN" and "18" in warnings[0][1]


def test_runtime_default_from_the_real_plan_format(tmp_path):
    """No pin: the node default lands although `providers` is empty (the stand-in's plan)."""
    (tmp_path / "package.json").write_text(json.dumps({"scripts": {"start": "node server.js"}}))
    warnings = []
    service = NixpacksService(config.defaults(), search_path=STANDIN_DIR)
    plan = service.plan(str(tmp_path), on_line=lambda text, level: warnings.append((level, text)))
    assert plan["providers"] == []
    assert plan["variables"]["NIXPACKS_NODE_VERSION"] == "22" and warnings == []


def test_low_pin_warns_with_the_real_plan_format(tmp_path):
    (tmp_path / "package.json").write_text(json.dumps({"scripts": {}}))
    warnings = []
    service = NixpacksService(config.defaults(), search_path=STANDIN_DIR)
    plan = service.plan(str(tmp_path), {"variables": {"NIXPACKS_NODE_VERSION": "16"}},
                        on_line=lambda text, level: warnings.append((level, text)))
    assert plan["variables"]["NIXPACKS_NODE_VERSION"] == "16"
    assert warnings == [("WARN", "node 16 is below the recommended minimum 22; keeping the pinned version")]


def test_plan_failure_is_command_failed(tmp_path):
    service = NixpacksService(config.defaults(), search_path=STANDIN_DIR)
    with pytest.raises(AgentError) as err:  # no package.json: the stand-in cannot plan
        service.plan(str(tmp_path))
    assert err.value.code == "command_failed" and "unable to generate" in err.value.details["stderr_tail"]


@pytest.mark.parametrize("metadata, variables, expected, warn", [
    ("node", {}, {"NIXPACKS_NODE_VERSION": "22"}, False),
    ("python,django,postgres", {"NIXPACKS_PYTHON_VERSION": "3.9"}, {"NIXPACKS_PYTHON_VERSION": "3.9"}, True),
    ("python", {"NIXPACKS_PYTHON_VERSION": "3.13"}, {"NIXPACKS_PYTHON_VERSION": "3.13"}, False),
    ("go", {}, {"NIXPACKS_GO_VERSION": "1.22"}, False),
    ("staticfile", {}, {}, False),
])
def test_runtime_defaults(metadata, variables, expected, warn):
    """The real tool's pinned plan: empty providers, the provider in NIXPACKS_METADATA."""
    plan = {"providers": [], "variables": {"NIXPACKS_METADATA": metadata, **variables}}
    warnings = nixpacks.apply_runtime_defaults(plan)
    assert plan["variables"] == {"NIXPACKS_METADATA": metadata, **expected}
    assert bool(warnings) is warn


@pytest.mark.parametrize("plan, expected", [
    ({"providers": ["Python", "..."]}, ["python"]),                      # a request's nixpacks_config
    ({"providers": ["node"], "variables": {"NIXPACKS_METADATA": "node,python"}}, ["node", "python"]),
    ({"providers": "node", "variables": {"NIXPACKS_METADATA": 7}}, []),  # hostile shapes are ignored
    ({"providers": [None, "@auto"], "variables": []}, []),
    ({}, []),
])
def test_plan_providers(plan, expected):
    assert nixpacks.plan_providers(plan) == expected


def test_deep_merge_does_not_touch_its_inputs():
    base = {"a": {"b": 1, "c": [1]}, "d": 1}
    merged = nixpacks.deep_merge(base, {"a": {"c": [2]}, "e": {"f": 1}})
    assert merged == {"a": {"b": 1, "c": [2]}, "d": 1, "e": {"f": 1}}
    assert base == {"a": {"b": 1, "c": [1]}, "d": 1}
