"""Every setting of the agent, declared once.

One :class:`Setting` per environment variable: its default, parser, one-line
doc and whether it is a secret. ``conf/config.example``, the README's table
and ``check-config`` are all derived from :data:`SETTINGS` (a test checks the
README against it). Sources, lowest first: defaults < config file < ``.env``
(development only, docs/design.md, "Settings and files") < process environment < CLI flags.

The loaded :class:`Config` is read-only; attribute names are the lowercased
variable names (``cfg.reconnect_interval``).
"""

import difflib
import os
from dataclasses import dataclass
from functools import partial
from urllib.parse import urlsplit

from agent.errors import ConfigError
from agent.values import parse_bool, parse_duration, parse_int, parse_list, parse_size

DEFAULT_CONFIG_FILE = "/etc/pulseup-agent/config"


def _text(value):
    return value


def _choice(*allowed, aliases=None):
    canonical = {choice.lower(): choice for choice in allowed}

    def parse(text):
        word = text.strip().lower()
        word = (aliases or {}).get(word, word)
        if word not in canonical:
            raise ValueError("one of " + ", ".join(allowed))
        return canonical[word]
    return parse


def _websocket_url(text):
    parts = urlsplit(text.strip())
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError("a ws:// or wss:// URL with a host, like wss://api.example.com/ws/agent_v2")
    return text.strip()


def _http_url(text):
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an http:// or https:// URL with a host")
    return text.strip().rstrip("/")


def _abs_path(text):
    if not text.startswith("/"):
        raise ValueError("an absolute path")
    return os.path.normpath(text)


def _ca_pin(text):
    prefix, _, digest = text.strip().partition(":")
    if prefix != "sha256" or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
        raise ValueError("sha256:<64 hex digits> (the devserver prints it)")
    return "sha256:" + digest.lower()


def _paths(text):
    return tuple(_abs_path(part) for part in parse_list(text, ":"))


_port = partial(parse_int, minimum=1, maximum=65535)
_count = partial(parse_int, minimum=0, maximum=1_000_000)
_positive = partial(parse_int, minimum=1, maximum=100_000)


@dataclass(frozen=True)
class Setting:
    name: str
    default: object
    parse: object
    doc: str
    secret: bool = False

    @property
    def attr(self):
        return self.name.lower()


def _s(name, default, parse, doc, secret=False):
    return Setting(name, default, parse, doc, secret)


SETTINGS = (
    # connection
    _s("WEBSOCKET_URL", None, _websocket_url, "Control-plane WebSocket URL (wss://HOST/ws/agent_v2); required by worker and run"),
    _s("JOIN_TOKEN", None, _text, "One-time enrollment token; only needed until the agent has a certificate", secret=True),
    _s("API_BASE_URL", None, _http_url, "Base URL of the control-plane HTTP API; derived from WEBSOCKET_URL when unset"),
    _s("ALLOW_INSECURE_TRANSPORT", False, parse_bool, "Permit ws:// and http:// (development and tests only)"),
    _s("RECONNECT_ENABLED", True, parse_bool, "Reconnect after a lost or failed connection; false means one attempt"),
    _s("RECONNECT_INTERVAL", 1.0, parse_duration, "First reconnect delay; doubles up to RECONNECT_BACKOFF_MAX"),
    _s("RECONNECT_MAX_ATTEMPTS", 0, _count, "Consecutive failed attempts before giving up; 0 retries forever"),
    _s("RECONNECT_BACKOFF_MAX", 60.0, parse_duration, "Cap of the reconnect delay"),
    _s("AUTH_PERMANENT_FAILURE_COOLDOWN", 3600.0, parse_duration, "Pause after a permanent authentication refusal"),
    _s("PING_INTERVAL", 30.0, parse_duration, "WebSocket ping interval"),
    _s("PING_TIMEOUT", 90.0, parse_duration, "Connection is dead after this long without data or pong"),
    _s("MAX_MESSAGE_BYTES", 16 * 1024**2, parse_size, "Largest incoming frame; larger frames close the connection (1009)"),
    # identity
    _s("CERT_DIR", "/var/lib/pulseup/certs", _abs_path, "Agent key, certificate, CA and enrollment.json"),
    _s("ENROLL_CA_PIN", None, _ca_pin, "sha256:<hex> pin of the control plane CA's public key, for enrollment"),
    _s("ENROLL_CA_FILE", None, _abs_path, "PEM CA file to trust during enrollment"),
    _s("SERVER_CA_FILE", None, _abs_path, "Extra CA trusted for the control plane's TLS certificate"),
    # commands
    _s("MAX_CONCURRENT_COMMANDS", 64, _positive, "Size of the command pool"),
    _s("COMMAND_TIMEOUT", 30.0, parse_duration, "Deadline of commands without their own (docs/commands.md, Operations)"),
    _s("GRACEFUL_TIMEOUT", 30.0, parse_duration, "How long shutdown waits for running commands"),
    _s("STATE_DIR", "/var/lib/pulseup/state", _abs_path, "Outbox, idempotency store, operations, schedules, proxy state"),
    _s("OUTBOX_MAX_MESSAGES", 10_000, _positive, "Outbox bound in messages"),
    _s("OUTBOX_MAX_BYTES", 64 * 1024**2, parse_size, "Outbox bound in bytes"),
    _s("PULSEUP_DISABLED_COMMANDS", (), parse_list, "Comma-separated commands and IPC ops refused with permission_denied"),
    # processes
    _s("SUPERVISOR_SOCKET", "/run/pulseup/supervisor.sock", _abs_path, "Supervisor IPC socket"),
    _s("WORKER_USER", "pulseup-worker", _text, "User the worker runs as"),
    _s("WORKER_GROUP", "pulseup", _text, "Group owning the supervisor socket directory"),
    _s("LOG_LEVEL", "INFO", _choice("DEBUG", "INFO", "WARNING", "ERROR", aliases={"warn": "warning"}), "DEBUG, INFO, WARN, ERROR"),
    _s("LOG_FORMAT", "json", _choice("json", "text"), "json (one object per line) or text"),
    _s("AGENT_LOG_DIR", "/var/log/pulseup", _abs_path, "Where the packaged units append worker.log and supervisor.log"),
    # docker and apps
    _s("DOCKER_HOST", None, _text, "Docker engine address; the SDK default socket when unset"),
    _s("APPS_DIR", "/opt/pulseup/apps", _abs_path, "Git work trees (build contexts)"),
    _s("DEPLOYMENT_DIR", "/opt/pulseup/deployments", _abs_path, "Build history and build plans"),
    _s("DEPLOYMENT_LOG_DIR", "/var/log/pulseup/deployments", _abs_path, "Deployment logs and step files"),
    _s("PULSEUP_MAX_PARALLEL_BUILDS", 2, _positive, "Host-wide image build slots"),
    _s("DOCKER_FORCE_LEGACY_BUILDS", False, parse_bool, "Disable BuildKit for builds"),
    _s("PULSEUP_COMPOSE_ALLOW_PRIVILEGED", False, parse_bool, "Lift the compose safety policy"),
    _s("PULSEUP_GIT_ALLOWED_HOSTS", ("github.com",), parse_list, "Hosts (optionally host:port) allowed in repository URLs"),
    _s("GIT_CA_FILE", None, _abs_path, "Extra CA git trusts for https:// remotes"),
    # proxy
    _s("CADDY_IMAGE", "caddy:2", _text, "Image of the managed proxy container"),
    _s("CADDY_HTTP_PORT", 80, _port, "Host port published for the proxy's HTTP"),
    _s("CADDY_HTTPS_PORT", 443, _port, "Host port published for the proxy's HTTPS"),
    _s("CADDY_TLS_ISSUER", "acme", _choice("acme", "internal"), "acme (public certificates) or internal (local CA)"),
    _s("PULSEUP_CADDY_HOST_PATH", None, _abs_path, "Host path of STATE_DIR/caddy when the agent runs in a container"),
    # databases and backups
    _s("PULSEUP_BACKUP_DIR", "/var/lib/pulseup/backups", _abs_path, "Backup base directory"),
    _s("PULSEUP_BACKUP_STORAGE_ROOTS", ("/var/lib/pulseup/backups", "/mnt", "/media", "/srv"), _paths, "Colon-separated roots allowed for storage_path"),
    _s("DB_IMAGE_POSTGRESQL", "postgres:16", _text, "PostgreSQL image"),
    _s("DB_IMAGE_MYSQL", "mysql:8.4", _text, "MySQL image"),
    _s("DB_IMAGE_MARIADB", "mariadb:11", _text, "MariaDB image"),
    _s("DB_IMAGE_REDIS", "redis:7", _text, "Redis image"),
    _s("DB_IMAGE_MONGODB", "mongo:7", _text, "MongoDB image"),
    _s("DB_IMAGE_PULL", "missing", _choice("missing", "never"), "Pull database images when missing, or never"),
    # host
    _s("PULSEUP_SSH_USERS", (), parse_list, "Local users whose authorized_keys may be managed"),
    _s("PULSEUP_PUBLIC_IP_LOOKUP", False, parse_bool, "Allow public-IP discovery for hardware info"),
    _s("PULSEUP_PUBLIC_IP_LOOKUP_URL", "https://api.ipify.org", _http_url, "Public-IP lookup service (2 s timeout)"),
    # self-update
    _s("UPDATE_MANIFEST_URL", None, _http_url, "Signed update manifest URL"),
    _s("UPDATE_PUBLIC_KEY_FILE", "/etc/pulseup-agent/update.pub", _abs_path, "Ed25519 key that signs update manifests"),
    _s("UPDATE_HEALTH_DEADLINE", 120.0, parse_duration, "Revert an update whose worker has not connected by then"),
    _s("AUTO_UPDATE_CHECK", False, parse_bool, "Check for updates periodically"),
    _s("AUTO_UPDATE_APPLY", False, parse_bool, "Install found updates automatically"),
    _s("AUTO_UPDATE_INTERVAL", 21600.0, parse_duration, "Interval of the update check"),
)

BY_NAME = {setting.name: setting for setting in SETTINGS}


class Config:
    """Read-only settings with the source each value came from."""

    __slots__ = ("_values", "_sources", "warnings")

    def __init__(self, values, sources, warnings=()):
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "_sources", dict(sources))
        object.__setattr__(self, "warnings", tuple(warnings))

    def __getattr__(self, attr):
        try:
            return self._values[attr]
        except KeyError:
            raise AttributeError(f"no setting {attr.upper()}") from None

    def __setattr__(self, attr, value):
        raise AttributeError("the configuration is read-only")

    def source(self, name):
        """Where the value of ``name`` (an env var name) came from."""
        return self._sources[BY_NAME[name].attr]

    def replace(self, **overrides):
        """A copy with some values replaced (already parsed); for tests and derived configs."""
        values, sources = dict(self._values), dict(self._sources)
        for attr, value in overrides.items():
            if attr not in values:
                raise AttributeError(f"no setting {attr.upper()}")
            values[attr], sources[attr] = value, "override"
        return Config(values, sources, self.warnings)

    def effective(self):
        """(name, display value, source) per setting, secrets masked."""
        rows = []
        for setting in SETTINGS:
            value = self._values[setting.attr]
            if setting.secret and value:
                value = "***"
            rows.append((setting.name, value, self._sources[setting.attr]))
        return rows


def defaults():
    """A Config holding only the defaults."""
    values = {s.attr: s.default for s in SETTINGS}
    return Config(values, {s.attr: "default" for s in SETTINGS})


def parse_env_file(path):
    """Yield (key, value, lineno) from a systemd EnvironmentFile-style file."""
    with open(path, encoding="utf-8") as handle:
        for lineno, raw in enumerate(handle, 1):
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("export "):
                line = line[len("export "):].lstrip()
            key, sep, value = line.partition("=")
            if not sep:
                raise ConfigError(f"{path}:{lineno}: expected KEY=VALUE, got {line[:40]!r}")
            yield key.strip(), _unquote(value.strip()), lineno


def _unquote(value):
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        inner = value[1:-1]
        return inner.replace('\\"', '"').replace("\\\\", "\\") if value[0] == '"' else inner
    return value.split(" #", 1)[0].rstrip()


def load(config_file=None, environ=None, cli_overrides=None, use_dotenv=None, cwd=None):
    """Load the configuration from every source; raises ConfigError.

    ``config_file`` None means the default file, which may be missing;
    ``use_dotenv`` None means docs/design.md, "Settings and files": only when not root and no
    explicit config file.
    """
    environ = os.environ if environ is None else environ
    values = {s.attr: s.default for s in SETTINGS}
    sources = {s.attr: "default" for s in SETTINGS}
    warnings = []
    explicit = config_file is not None
    path = config_file or DEFAULT_CONFIG_FILE
    if explicit or os.path.exists(path):
        _apply_file(path, values, sources, warnings, required=explicit)
    if use_dotenv is None:
        use_dotenv = not explicit and os.geteuid() != 0
    dotenv = os.path.join(cwd or os.getcwd(), ".env")
    if use_dotenv and os.path.isfile(dotenv):
        _apply_file(dotenv, values, sources, warnings, required=False)
    for setting in SETTINGS:
        if setting.name in environ:
            _apply(setting, environ[setting.name], "environment", values, sources)
    for name, raw in (cli_overrides or {}).items():
        _apply(BY_NAME[name], raw, "command line", values, sources)
    return Config(values, sources, warnings)


def _apply_file(path, values, sources, warnings, required):
    try:
        entries = list(parse_env_file(path))
    except OSError as exc:
        if required or not isinstance(exc, FileNotFoundError):
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        return
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not valid UTF-8") from None
    for key, raw, lineno in entries:
        setting = BY_NAME.get(key)
        if setting is None:
            warnings.append(_unknown_key(key, f"{path}:{lineno}"))
            continue
        _apply(setting, raw, f"{path}:{lineno}", values, sources)


def _apply(setting, raw, source, values, sources):
    if raw == "" and setting.default is None:
        values[setting.attr], sources[setting.attr] = None, source
        return
    try:
        values[setting.attr] = setting.parse(raw)
    except ValueError as exc:
        shown = "***" if setting.secret else repr(raw)
        raise ConfigError(f"{setting.name}={shown} (from {source}): expected {exc}") from None
    sources[setting.attr] = source


def _unknown_key(key, source):
    close = difflib.get_close_matches(key.upper(), BY_NAME, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown setting {key} in {source} (ignored){hint}"


def api_base_url(cfg):
    """The control plane's HTTP base URL (docs/protocol.md, "Enrollment and certificates"):
    ``API_BASE_URL``, else ``WEBSOCKET_URL`` with ws->http, wss->https and the path cut at its
    first ``/ws/`` (a path without ``/ws/`` is dropped). Raises ConfigError when neither is set."""
    if cfg.api_base_url:
        return cfg.api_base_url.rstrip("/")
    if not cfg.websocket_url:
        raise ConfigError("WEBSOCKET_URL (or API_BASE_URL) is not set")
    parts = urlsplit(cfg.websocket_url)
    scheme = {"ws": "http", "wss": "https"}[parts.scheme]
    cut = parts.path.find("/ws/")
    prefix = parts.path[:cut] if cut >= 0 else ""
    return f"{scheme}://{parts.netloc}{prefix}".rstrip("/")
