"""agent.update.check, agent.update.apply and agent.config_updated (docs/commands.md, "Agent commands"; docs/operations.md, "Self-update")."""

from marshmallow import validate

from agent.operations import spec
from agent.protocol.fields import RequestSchema, StrictBoolean, StrictString

# docs/commands.md, "Operations": update:agent, serialised per agent, 900 / 3600 s
APPLY = spec("agent.update.apply")


class ApplyRequest(RequestSchema):
    version = StrictString(load_default=None, validate=validate.Regexp(r"^v?\d+\.\d+\.\d+\Z"))
    force = StrictBoolean(load_default=False)


class ConfigUpdated(RequestSchema):
    auto_updates_enabled = StrictBoolean(required=True)
    current_version = StrictString(load_default=None)
    latest_version = StrictString(load_default=None)
    update_available = StrictBoolean(load_default=None)


def check(ctx, request):
    return ctx.services.update.check()


def apply(ctx, request):
    # Point of no return: the start of the installation (docs/commands.md, "Agent commands").
    return ctx.services.update.apply(request["version"], request["force"], check=ctx.check,
                                     commit=ctx.point_of_no_return)


def config_updated(ctx, request):
    ctx.services.update.set_auto(request["auto_updates_enabled"])
    return {}


def register(registry):
    registry.add("agent.update.check", check)
    registry.add("agent.update.apply", apply, ApplyRequest(), APPLY, privileged=True)
    # a special event, not reachable through the `command` wrapper (docs/commands.md, "Agent commands")
    registry.add("agent.config_updated", config_updated, ConfigUpdated(), wrappable=False)
