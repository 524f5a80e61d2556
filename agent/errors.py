"""The agent's one exception root and the single table of error codes.

Every failure a command can report is an :class:`AgentError` carrying one of
the stable codes of docs/commands.md, "Errors". Lower layers translate the
exceptions of the libraries they use at their boundary
(``raise AgentError(...) from exc``); only the dispatcher and the process
entry points catch ``Exception``.
"""

# code -> one-line meaning (docs/commands.md, "Errors"; docs/protocol.md, "Dispatch" and "Supervisor IPC")
CODES = {
    "invalid_argument": "missing, ill-typed or invalid field",
    "not_found": "the object does not exist",
    "conflict": "already exists, already running, or queue full",
    "failed_precondition": "the current state forbids the action",
    "permission_denied": "refused by the OS, Docker, a remote, or local policy",
    "unavailable": "a dependency is unreachable or the agent is busy",
    "command_failed": "an external program exited non-zero",
    "health_check_failed": "a new container never passed its readiness gate",
    "integrity_error": "size, checksum or manifest mismatch",
    "cancelled": "the operation was cancelled",
    "deadline_exceeded": "the operation's deadline was reached",
    "unimplemented": "unknown command or action",
    "internal": "unexpected agent fault",
    # protocol-level codes carried by `error` frames
    "invalid_message": "a frame that is not a valid envelope",
    "unauthenticated": "a call arrived before authentication succeeded",
    "not_cancellable": "the operation is past its point of no return",
}


class AgentError(Exception):
    """A failure with a stable machine ``code`` and a one-line message.

    ``field`` names the offending request field; ``details`` are extra keys
    for the reply's inner ``data`` object (``exit_code``, ``stderr_tail``...).
    """

    def __init__(self, code, message, field=None, **details):
        if code not in CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.details = details

    def reply_data(self):
        """The inner ``data`` object of an error reply (docs/commands.md, "Errors")."""
        data = {"code": self.code}
        if self.field:
            data["field"] = self.field
        data.update(self.details)
        return data

    def __repr__(self):
        return f"AgentError({self.code!r}, {self.message!r})"


def invalid(field, message):
    """Shorthand for the most common refusal: a bad request field."""
    return AgentError("invalid_argument", f"{field}: {message}", field=field)


class ConfigError(Exception):
    """A setting with a bad value; the process exits with EX_CONFIG (78)."""
