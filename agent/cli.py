"""Command line: ``pulseup-agent [--config FILE] [run|supervisor|worker|enroll|devserver|check-config|doctor|commands|version]``."""

import sys


def _runs_on_threads(argv):
    """True for the `supervisor` role: plain threads, no gevent (issue 19: half the memory)."""
    words = iter(argv)
    for word in words:
        if word in ("--config", "--log-level", "--log-format"):
            next(words, None)
        elif not word.startswith("-"):
            return word == "supervisor"
    return False


if not _runs_on_threads(sys.argv[1:]):
    from gevent import monkey

    # Before anything imports ssl or socket (websocket-client does at import).
    monkey.patch_all()

import argparse  # noqa: E402

from agent import __version__, config, exitcodes, log  # noqa: E402
from agent.errors import ConfigError  # noqa: E402

ROLES = ("run", "supervisor", "worker", "enroll", "devserver", "check-config", "doctor", "commands", "version")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="pulseup-agent",
        description="PulseUp host agent: deploys and operates apps and databases for the PulseUp control plane.",
        epilog="Settings come from the config file, the environment and these flags; "
               "`pulseup-agent check-config` shows the effective values.",
    )
    parser.add_argument("--config", metavar="FILE", help=f"settings file (default {config.DEFAULT_CONFIG_FILE})")
    parser.add_argument("--log-level", choices=("DEBUG", "INFO", "WARN", "WARNING", "ERROR"), type=str.upper)
    parser.add_argument("--log-format", choices=("json", "text"))
    parser.add_argument("--version", action="version", version=f"pulseup-agent {__version__}")
    roles = parser.add_subparsers(dest="role", metavar="COMMAND")
    roles.add_parser("run", help="supervisor plus a worker child (the default)")
    roles.add_parser("supervisor", help="privileged IPC server only (root)")
    roles.add_parser("worker", help="the unprivileged worker that holds the connection")
    enroll = roles.add_parser("enroll", help="enroll with JOIN_TOKEN and exit")
    enroll.add_argument("--join-token-file", metavar="FILE", help="read the join token from FILE ('-' for stdin)")
    roles.add_parser("devserver", help="development control plane (see `devserver --help`)", add_help=False)
    roles.add_parser("check-config", help="print the effective settings and their sources")
    roles.add_parser("doctor", help="check this host's agent set-up").add_argument("--json", action="store_true")
    commands = roles.add_parser("commands", help="print the command and event catalogue (docs/commands.md)")
    commands.add_argument("--json", action="store_true")
    commands.add_argument("--markdown", action="store_true")
    roles.add_parser("version", help="print the version")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, rest = _split_devserver(parser, argv)
    role = args.role or "run"
    if role == "version":
        print(f"pulseup-agent {__version__}")
        return exitcodes.OK
    if role == "devserver":
        from agent.devserver.cli import main as devserver_main
        return devserver_main(rest)
    if role == "commands":  # read from the registry; needs no config
        from agent.handlers.catalogue import commands_main
        return commands_main(args)
    if role == "doctor":  # a config that cannot load is one of its findings (docs/operations.md)
        from agent.doctor import doctor_main
        return doctor_main(args, lambda: _load_config(args, role))
    try:
        cfg = _load_config(args, role)
    except ConfigError as exc:
        print(f"pulseup-agent: config error: {exc}", file=sys.stderr)
        return exitcodes.CONFIG
    log.setup(cfg.log_level, cfg.log_format)
    for warning in cfg.warnings:
        log.get("config").warning(warning)
    return ROLE_MAIN[role](cfg, args)


def _split_devserver(parser, argv):
    """``devserver`` takes its own flags and subcommands; hand it the rest verbatim."""
    for index, word in enumerate(argv):
        if word == "devserver":
            return parser.parse_args(argv[:index + 1]), argv[index + 1:]
        if not word.startswith("-") and word in ROLES:
            break
    return parser.parse_args(argv), []


def _load_config(args, role):
    overrides = {}
    if args.log_level:
        overrides["LOG_LEVEL"] = args.log_level
    if args.log_format:
        overrides["LOG_FORMAT"] = args.log_format
    # docs/design.md, "Settings and files": the supervisor never reads a .env file
    use_dotenv = False if role == "supervisor" else None
    return config.load(args.config, cli_overrides=overrides, use_dotenv=use_dotenv)


def _check_config(cfg, args):
    width = max(len(name) for name, _, _ in cfg.effective())
    for name, value, source in cfg.effective():
        shown = "" if value is None else ",".join(value) if isinstance(value, tuple) else value
        print(f"{name:<{width}}  {shown!s:<40}  # {source}")
    return exitcodes.OK


def _run(cfg, args):
    from agent.supervisor.main import run_main
    # the worker is handed over as a callable: agent.supervisor never imports agent.worker
    return run_main(cfg, config_file=args.config, in_process=lambda: _worker(cfg, args))


def _supervisor(cfg, args):
    from agent.supervisor.main import supervisor_main
    return supervisor_main(cfg)


def _worker(cfg, args):
    from agent.worker.main import worker_main
    return worker_main(cfg)


def _enroll(cfg, args):
    from agent.worker.enroll import enroll_main
    return enroll_main(cfg, join_token_file=args.join_token_file)


ROLE_MAIN = {
    "check-config": _check_config,
    "run": _run,
    "supervisor": _supervisor,
    "worker": _worker,
    "enroll": _enroll,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

