"""Per-engine conventions: images, env variables, ports, probes, dump and restore scripts.

Everything here follows docs/commands.md, "Databases" (provisioning, dump and
restore). Scripts run as ``sh -c '<script>'`` inside the database container and
reference credentials only through the container's own environment variables, so no
secret is part of an exec request, a log line or an event. Database names are validated
(docs/commands.md, "Identifiers and values") before :func:`quote` puts them into a script.
"""

import re
import shlex
from dataclasses import dataclass, field
from typing import Callable, Optional

ENGINE_NAMES = ("mysql", "postgresql", "mariadb", "redis", "mongodb")
USERNAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}\Z")
DATABASE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}\Z")

# The official postgres image's initdb leaves trust on the local socket; probing over TCP
# (docs/hosts.md, "Database containers") skips the temporary init server,
# which listens on the socket only.
_PG_PROBE = ('PGPASSWORD="$POSTGRES_PASSWORD" psql -h 127.0.0.1 -U "$POSTGRES_USER" '
             '-d "$POSTGRES_DB" -tAc "SELECT 1"')
_PG_VERSION = ('PGPASSWORD="$POSTGRES_PASSWORD" psql -h 127.0.0.1 -U "$POSTGRES_USER" '
               '-d "$POSTGRES_DB" -tAc "SHOW server_version"')
# mariadb images ship `mariadb`, older and mysql images only `mysql` (docs/commands.md, "Databases").
_MY_CLIENT = "if command -v mariadb >/dev/null 2>&1; then c=mariadb; else c=mysql; fi; "
_MY_DUMPER = "if command -v mariadb-dump >/dev/null 2>&1; then d=mariadb-dump; else d=mysqldump; fi; "
_REDIS_CLI = 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli --no-auth-warning -h 127.0.0.1 '
# Passwords never reach an argv (they would show in /proc/<pid>/cmdline on the host). The
# mongo tools read theirs from a 0600 YAML --config file written by shell builtins (printf);
# sed sees the password on stdin only, to double single quotes for YAML.
_MONGO_USER = '--username="$MONGO_INITDB_ROOT_USERNAME" --authenticationDatabase=admin'
_MONGO_CONFIG = ("umask 077; f=$(mktemp) || exit 1; "
                 "{ printf \"password: '\"; printf '%s' \"$MONGO_INITDB_ROOT_PASSWORD\" | sed \"s/'/''/g\"; "
                 "printf \"'\\n\"; } > \"$f\"; ")
_MONGOSH_AUTH = ('db.getSiblingDB("admin").auth(process.env.MONGO_INITDB_ROOT_USERNAME, '
                 'process.env.MONGO_INITDB_ROOT_PASSWORD); ')


def _mongo_tool(command):
    """``command`` run with the password in a private config file, removed afterwards."""
    return _MONGO_CONFIG + f'{command} {_MONGO_USER} --config="$f"; rc=$?; rm -f "$f"; exit $rc'


def _mongosh(expression):
    return f"mongosh --quiet --host 127.0.0.1 --eval '{_MONGOSH_AUTH}print({expression})'"

# format name -> file extension (docs/commands.md, "Databases", backup formats)
FORMAT_EXT = {"pg_custom": "dump", "pg_plain": "sql", "mysql_sql": "sql",
              "redis_rdb": "rdb", "mongo_archive": "archive"}
# BackupEntry.type by engine (docs/commands.md, "Shapes")
ENTRY_TYPE = {"postgresql": "sql", "mysql": "sql", "mariadb": "sql", "redis": "redis",
              "mongodb": "mongodb"}


def quote(word):
    """``shlex.quote`` of ``word`` for sh; callers validate it first, this is defence in depth
    (docs/security.md, "Validators and shell scripts")."""
    return shlex.quote(word)


@dataclass(frozen=True)
class Engine:
    name: str
    image_setting: str              # Config attribute holding the image
    port: int                       # internal port
    data_dir: str                   # volume mount point
    default_user: str
    default_database: str
    probe: str                      # authenticated readiness script (exit 0 = ready)
    version: str                    # prints the server version on stdout
    env: Callable[[str, str, str], dict] = field(repr=False)
    command: Optional[list] = None
    user_env: str = ""              # env var naming the user (for already-existing containers)
    database_env: str = ""          # env var naming the default database
    probe_expect: str = ""          # required stdout of the probe, when exit codes lie

    def image(self, cfg):
        return getattr(cfg, self.image_setting)

    def format_for(self, requested=None):
        """Backup format name for a request's ``format`` (postgresql only)."""
        if self.name == "postgresql":
            return "pg_plain" if requested == "plain" else "pg_custom"
        return {"redis": "redis_rdb", "mongodb": "mongo_archive"}.get(self.name, "mysql_sql")

    def dump_script(self, database, fmt, backup_uid):
        """The dump command of docs/commands.md, "Databases"; its stdout is the backup."""
        db = quote(database)
        if self.name == "postgresql":
            tail = "--format=plain --clean --if-exists" if fmt == "pg_plain" else "--format=custom --compress=0"
            return f'PGPASSWORD="$POSTGRES_PASSWORD" exec pg_dump -U "$POSTGRES_USER" -d {db} {tail}'
        if self.name in ("mysql", "mariadb"):
            dumper = _MY_DUMPER if self.name == "mariadb" else "d=mysqldump; "
            return (dumper + f'MYSQL_PWD="${self._root_password_env()}" exec "$d" -u root '
                    f"--single-transaction --routines --events --triggers --hex-blob --databases {db}")
        if self.name == "redis":
            return _redis_dump(backup_uid)
        return _mongo_tool(f"mongodump --archive --db={db}")

    def restore_script(self, database, fmt):
        """The restore command of docs/commands.md, "Databases", reading the dump on stdin (not redis)."""
        db = quote(database)
        if self.name == "postgresql":
            if fmt == "pg_plain":
                return (f'PGPASSWORD="$POSTGRES_PASSWORD" exec psql -U "$POSTGRES_USER" -d {db} '
                        "-v ON_ERROR_STOP=1 --single-transaction -q")
            return (f'PGPASSWORD="$POSTGRES_PASSWORD" exec pg_restore -U "$POSTGRES_USER" -d {db} '
                    "--clean --if-exists --no-owner --exit-on-error --single-transaction")
        if self.name in ("mysql", "mariadb"):
            client = _MY_CLIENT if self.name == "mariadb" else "c=mysql; "
            return client + f'MYSQL_PWD="${self._root_password_env()}" exec "$c" -u root'
        if self.name == "mongodb":
            return _mongo_tool(f"mongorestore --archive --drop --nsInclude={quote(database + '.*')}")
        raise ValueError("redis is restored by replacing dump.rdb")

    def _root_password_env(self):
        return "MARIADB_ROOT_PASSWORD" if self.name == "mariadb" else "MYSQL_ROOT_PASSWORD"


def _redis_dump(backup_uid):
    # redis-cli --rdb reports progress on stdout; keep it only for a failure (docs/commands.md, "Databases":
    # stderr text alone is a warning). The temporary file is removed whatever happens.
    tmp = quote(f"/tmp/pulseup-{backup_uid}.rdb")
    return (f"out=$({_REDIS_CLI}--rdb {tmp} 2>&1); rc=$?; "
            f'if [ $rc -ne 0 ]; then echo "$out" >&2; rm -f {tmp}; exit $rc; fi; '
            f"cat {tmp}; rc=$?; rm -f {tmp}; exit $rc")


def _pg_env(user, password, database):
    return {"POSTGRES_USER": user, "POSTGRES_PASSWORD": password, "POSTGRES_DB": database}


def _my_env(prefix):
    def env(user, password, database):
        return {f"{prefix}_ROOT_PASSWORD": password, f"{prefix}_USER": user,
                f"{prefix}_PASSWORD": password, f"{prefix}_DATABASE": database}
    return env


def _redis_env(user, password, database):
    return {"REDIS_PASSWORD": password}


def _mongo_env(user, password, database):
    return {"MONGO_INITDB_ROOT_USERNAME": user, "MONGO_INITDB_ROOT_PASSWORD": password,
            "MONGO_INITDB_DATABASE": database}


def _my_probe(prefix, client):
    return (client + f'MYSQL_PWD="${prefix}_PASSWORD" "$c" -h 127.0.0.1 -u "${prefix}_USER" '
            f'-D "${prefix}_DATABASE" -N -B -e "SELECT 1"')


def _my_version(prefix, client):
    return client + f'MYSQL_PWD="${prefix}_ROOT_PASSWORD" "$c" -h 127.0.0.1 -u root -N -B -e "SELECT VERSION()"'


ENGINES = {
    "postgresql": Engine(
        "postgresql", "db_image_postgresql", 5432, "/var/lib/postgresql/data", "admin", "app",
        _PG_PROBE, _PG_VERSION, _pg_env, user_env="POSTGRES_USER", database_env="POSTGRES_DB"),
    "mysql": Engine(
        "mysql", "db_image_mysql", 3306, "/var/lib/mysql", "admin", "app",
        _my_probe("MYSQL", "c=mysql; "), _my_version("MYSQL", "c=mysql; "), _my_env("MYSQL"),
        user_env="MYSQL_USER", database_env="MYSQL_DATABASE"),
    "mariadb": Engine(
        "mariadb", "db_image_mariadb", 3306, "/var/lib/mysql", "admin", "app",
        _my_probe("MARIADB", _MY_CLIENT), _my_version("MARIADB", _MY_CLIENT), _my_env("MARIADB"),
        user_env="MARIADB_USER", database_env="MARIADB_DATABASE"),
    "redis": Engine(
        "redis", "db_image_redis", 6379, "/data", "default", "0",
        _REDIS_CLI + "ping", _REDIS_CLI + "INFO server", _redis_env,
        # repl-diskless-sync-delay 0: `redis-cli --rdb` otherwise waits 5 s (docs/hosts.md).
        # the password goes into a 0600 config file (redis quoting: \\ and \" escaped), not argv
        command=["sh", "-c", "umask 077; { printf 'requirepass \"'; "
                             "printf '%s' \"$REDIS_PASSWORD\" | sed 's/[\\\\\"]/\\\\&/g'; printf '\"\\n'; } "
                             "> /tmp/pulseup-redis.conf && exec redis-server /tmp/pulseup-redis.conf "
                             "--appendonly no --repl-diskless-sync-delay 0"],
        probe_expect="PONG"),
    "mongodb": Engine(
        "mongodb", "db_image_mongodb", 27017, "/data/db", "root", "app",
        _mongosh("db.runCommand({ping:1}).ok"), _mongosh("db.version()"),
        _mongo_env, user_env="MONGO_INITDB_ROOT_USERNAME", database_env="MONGO_INITDB_DATABASE",
        probe_expect="1"),
}


def get(name):
    """The Engine called ``name`` (case-insensitive); ValueError for unknown names."""
    engine = ENGINES.get((name or "").lower())
    if engine is None:
        raise ValueError(f"must be one of {', '.join(ENGINE_NAMES)}")
    return engine


def parse_version(engine_name, text):
    """The version string out of a version script's stdout."""
    if engine_name == "redis":
        match = re.search(r"^redis_version:(\S+)", text, re.M)
        return match.group(1) if match else ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
