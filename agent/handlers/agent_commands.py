"""``agent.logs.fetch``, ``agent.command.list|execute``, ``agent.uninstall`` and
``server.ssh_key.add|remove`` (docs/commands.md, "Agent commands";
docs/protocol.md, "Supervisor IPC").

Privileged work goes to the supervisor through ``ctx.services.ipc`` (docs/protocol.md, "Supervisor IPC"); with
no supervisor the command answers ``unavailable``. The supervisor validates again with its
own root-owned configuration: the checks here only refuse early.
"""

from marshmallow import ValidationError, fields, validate, validates_schema

from agent.errors import AgentError
from agent.operations import OPERATIONS, spec
from agent.protocol.fields import (
    USER_RE, NoArguments, RequestSchema, StrictBoolean, StrictInteger, StrictString, matching, printable)
from agent.protocol.ipc import OP_AGENT_UNINSTALL, OP_SSH_KEYS_ADD, OP_SSH_KEYS_REMOVE
from agent.services.commands import CommandRunner, agent_logs, catalogue, refuse_if_disabled, require_ipc

KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")
_PUBLIC_KEY = validate.Regexp(r"^(%s) [A-Za-z0-9+/=]+( [^\r\n\x00]*)?\Z" % "|".join(KEY_TYPES),
                              error="must be one OpenSSH public key line (no options prefix)")

def _execute_timeout(request):
    """docs/commands.md, "Operations": system.update_packages gets 1800 s, every other command 300 s."""
    if request.get("command_id") == "system.update_packages":
        return 1800
    return OPERATIONS["agent.command.execute"].default


EXECUTE = spec("agent.command.execute", timeout_default=_execute_timeout)
SSH_KEY = spec("server.ssh_key.add")


class LogsRequest(RequestSchema):
    lines = StrictInteger(load_default=100, validate=validate.Range(1, 5000))


class ExecuteRequest(RequestSchema):
    command_id = StrictString(required=True, validate=printable(1, 128))
    args = fields.Dict()            # accepted and ignored (docs/commands.md, "Agent commands")
    confirm = StrictBoolean(load_default=False)


class SshKeyAddRequest(RequestSchema):
    user = StrictString(required=True, validate=matching(USER_RE))
    public_key = StrictString(required=True, validate=[validate.Length(1, 16 * 1024), _PUBLIC_KEY])
    comment = StrictString(validate=printable(maximum=256))


class SshKeyRemoveRequest(RequestSchema):
    user = StrictString(required=True, validate=matching(USER_RE))
    fingerprint = StrictString(validate=validate.Regexp(r"^SHA256:[A-Za-z0-9+/]{43}\Z",
                                                        error="must be SHA256:<43 base64 characters>"))
    public_key = StrictString(validate=[validate.Length(1, 16 * 1024), _PUBLIC_KEY])

    @validates_schema
    def _exactly_one(self, data, **kwargs):
        if ("fingerprint" in data) == ("public_key" in data):
            raise ValidationError("exactly one of fingerprint and public_key is required", "fingerprint")


def logs_fetch(ctx, request):
    return agent_logs(ctx.cfg, request["lines"])


def command_list(ctx, request):
    return catalogue()


def command_execute(ctx, request):
    return CommandRunner(ctx).execute(request["command_id"], request["confirm"])


def uninstall(ctx, request):
    refuse_if_disabled(ctx.cfg, "agent.uninstall")
    require_ipc(ctx.services).call(OP_AGENT_UNINSTALL, {}, timeout=30.0)
    return {"success": True, "message": "Agent uninstallation requested successfully"}


def _ssh_user(ctx, request, command):
    refuse_if_disabled(ctx.cfg, command)
    if request["user"] not in (ctx.cfg.pulseup_ssh_users or ()):
        raise AgentError("permission_denied", f"user {request['user']!r} is not in PULSEUP_SSH_USERS",
                         field="user")
    return require_ipc(ctx.services)


def ssh_key_add(ctx, request):
    ipc = _ssh_user(ctx, request, "server.ssh_key.add")
    args = {k: request[k] for k in ("user", "public_key", "comment") if k in request}
    result = ipc.call(OP_SSH_KEYS_ADD, args, timeout=ctx.remaining() or 60.0)
    return {"user": request["user"], "fingerprint": result["fingerprint"], "added": bool(result["added"])}


def ssh_key_remove(ctx, request):
    ipc = _ssh_user(ctx, request, "server.ssh_key.remove")
    args = {k: request[k] for k in ("user", "fingerprint", "public_key") if k in request}
    result = ipc.call(OP_SSH_KEYS_REMOVE, args, timeout=ctx.remaining() or 60.0)
    return {"user": request["user"], "fingerprint": result["fingerprint"], "removed": bool(result["removed"])}


def register(registry):
    registry.add("agent.logs.fetch", logs_fetch, LogsRequest())
    registry.add("agent.command.list", command_list, NoArguments())
    registry.add("agent.command.execute", command_execute, ExecuteRequest(), EXECUTE)
    registry.add("agent.uninstall", uninstall, NoArguments(), privileged=True)
    registry.add("server.ssh_key.add", ssh_key_add, SshKeyAddRequest(), SSH_KEY, privileged=True)
    registry.add("server.ssh_key.remove", ssh_key_remove, SshKeyRemoveRequest(), SSH_KEY, privileged=True)
