"""`pulseup-agent commands` and docs/commands.md (agent/handlers/catalogue.py)."""

import importlib.util
import json
import pathlib

from agent import cli
from agent.handlers import build_registry, catalogue
from agent.protocol import events

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("gen_commands", ROOT / "scripts" / "gen-commands.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checked_in_docs_are_current():
    text = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    assert _script().rendered(text) == text, "docs/commands.md is stale: run scripts/gen-commands.py"


def test_every_registered_command_is_described_with_a_summary():
    names = build_registry().names()
    described = [c["name"] for c in catalogue.describe()["commands"]]
    assert described == names
    assert set(catalogue.SUMMARY) == set(names)
    assert set(catalogue.EMITS) <= set(names)
    assert {e for emitted in catalogue.EMITS.values() for e in emitted} <= set(events.CATALOGUE)


def test_fields_types_defaults_and_deadlines_come_from_the_code():
    commands = {c["name"]: c for c in catalogue.describe()["commands"]}
    start = commands["service.start"]
    assert start["fields"][0]["name"] == "service_uid" and start["fields"][0]["required"] is True
    assert start["operation"]["timeout_default"] == 120 and start["operation"]["timeout_max"] == 600
    assert start["operation"]["serialised"] is True
    deploy = {f["name"]: f for f in commands["service.app.deploy"]["fields"]}
    assert deploy["health_timeout_seconds"]["type"] == "number"
    assert deploy["health_timeout_seconds"]["default"] == 120.0
    assert "value 5..1800" in deploy["health_timeout_seconds"]["constraints"]
    assert deploy["service.deployment_method"]["constraints"][0].startswith("one of ")
    assert commands["agent.ping"]["raw"] is True and commands["agent.ping"]["operation"] is None
    assert commands["agent.config_updated"]["wrappable"] is False
    assert commands["server.ssh_key.add"]["privileged"] is True
    assert commands["service.delete"]["operation"]["preempting"] is True
    execute = commands["agent.command.execute"]["operation"]
    assert execute["timeout_default"] == 300 and execute["timeout_default_varies"] is True


def test_cli_prints_json_and_markdown(capsys):
    assert cli.main(["commands", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {c["name"] for c in data["commands"]} == set(build_registry().names())
    assert {e["name"] for e in data["events"]} == set(events.CATALOGUE)
    assert cli.main(["commands", "--markdown"]) == 0
    assert "### `service.app.deploy`" in capsys.readouterr().out
    assert cli.main(["commands"]) == 0
    assert "service.start" in capsys.readouterr().out
