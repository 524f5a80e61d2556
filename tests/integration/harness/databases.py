"""PostgreSQL, MariaDB and Redis from Debian's packages as private loopback processes.

docs/hosts.md ("The test machines"): each starts in < 2 s with private dirs, no systemd needed.
Each server runs in the foreground as a ManagedProcess (its own process group, SIGTERM on
pytest's death) under the package's system user, with a password for TCP clients.
"""
import glob
import os
import secrets
import shutil
import signal

from .process import SYSTEM_PATH, ManagedProcess, free_port, make_tempdir, run, wait_until

START_TIMEOUT = 60
_CLEAN_ENV = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


class _Server:
    """Common shape: host, port, user, password (and database); start() / stop()."""

    host = "127.0.0.1"
    kind = "server"
    owner = None  # system user owning the private dir and running the server
    stop_signal = signal.SIGTERM

    def __init__(self):
        self.dir = None
        self.process = None
        self.port = None
        self.password = secrets.token_hex(12)

    @property
    def log_path(self):
        return os.path.join(self.dir, f"{self.kind}.log")

    def start(self):
        self.dir = make_tempdir(self.kind, owner=self.owner)
        self.port = free_port()
        try:
            self.prepare()
            self.process = ManagedProcess(self.kind, self.server_argv(), self.log_path,
                                          env=dict(_CLEAN_ENV), user=self.owner, cwd=self.dir)
            self.process.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_until(self, check, what):
        return wait_until(check, what, timeout=START_TIMEOUT, process=self.process)

    def prepare(self):
        """Create the data dir before the server starts (as root where needed)."""

    def stop(self):
        if self.process is not None:
            self.process.stop(self.stop_signal, timeout=30)
            self.process = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def _write_owned(self, name, content, mode=0o600):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(content)
        os.chmod(path, mode)
        if self.owner:
            shutil.chown(path, user=self.owner, group=self.owner)
        return path


class PostgresServer(_Server):
    """PostgreSQL superuser `user` with a scram password over TCP; trust on its own socket."""

    kind = "postgres"
    owner = "postgres"
    user = "pulseup"
    database = "pulseup_test"
    # SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for open sessions.
    stop_signal = signal.SIGINT

    @property
    def bin_dir(self):
        return sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key)[-1]

    @property
    def socket_dir(self):
        return self.dir

    @property
    def url(self):
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    def prepare(self):
        pwfile = self._write_owned("pwfile", self.password + "\n")
        run([os.path.join(self.bin_dir, "initdb"), "-D", os.path.join(self.dir, "data"),
             "-U", self.user, "--pwfile", pwfile, "--auth-local=trust",
             "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
            what="initdb", user=self.owner, cwd=self.dir, env=dict(_CLEAN_ENV))

    def server_argv(self):
        # Run `postgres` itself rather than `pg_ctl start`: pg_ctl detaches the postmaster,
        # which would escape our process group and the parent-death signal.
        return [os.path.join(self.bin_dir, "postgres"), "-D", os.path.join(self.dir, "data"),
                "-p", self.port, "-k", self.dir, "-c", "listen_addresses=127.0.0.1",
                "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off"]

    def wait_ready(self):
        # Authenticated query over TCP, not pg_isready on the socket (docs/hosts.md, "Database containers").
        self.wait_until(lambda: self.psql("SELECT 1", database="postgres"), "postgres query")
        self.psql(f"CREATE DATABASE {self.database}", database="postgres")

    def psql(self, sql, database=None):
        """Run sql over TCP with the password; returns stdout (str), raises ServiceError."""
        result = run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                      "-h", self.host, "-p", self.port, "-U", self.user,
                      "-d", database or self.database, "-c", sql],
                     what="psql", env=dict(_CLEAN_ENV, PGPASSWORD=self.password,
                                           PGCONNECT_TIMEOUT="5"))
        return result.stdout.decode()


class MariadbServer(_Server):
    """MariaDB user `user`@'%' with all privileges and a password; root via the socket."""

    kind = "mariadb"
    owner = "mysql"
    user = "pulseup"
    database = "pulseup_test"

    @property
    def socket_path(self):
        return os.path.join(self.dir, "mysqld.sock")

    def prepare(self):
        # --no-defaults: never read /etc/mysql, whose datadir/socket belong to the system server.
        run(["mariadb-install-db", "--no-defaults", f"--datadir={self.dir}/data",
             f"--user={self.owner}", "--skip-test-db", "--skip-name-resolve"],
            what="mariadb-install-db", cwd=self.dir, env=dict(_CLEAN_ENV), timeout=180)

    def server_argv(self):
        return ["mariadbd", "--no-defaults", f"--datadir={self.dir}/data",
                f"--socket={self.socket_path}", f"--port={self.port}",
                "--bind-address=127.0.0.1", f"--pid-file={self.dir}/mariadbd.pid",
                "--skip-name-resolve", "--innodb-flush-log-at-trx-commit=0",
                "--innodb-buffer-pool-size=64M"]

    def wait_ready(self):
        self.wait_until(self._socket_ping, "mariadbd socket ping")
        self.root_sql(
            f"CREATE USER '{self.user}'@'%' IDENTIFIED BY '{self.password}';"
            f"GRANT ALL PRIVILEGES ON *.* TO '{self.user}'@'%' WITH GRANT OPTION;"
            f"CREATE DATABASE {self.database};")
        self.wait_until(lambda: self.sql("SELECT 1"), "mariadb query over TCP")

    def _socket_ping(self):
        run(["mariadb-admin", "--no-defaults", "-S", self.socket_path, "-u", "root",
             "--connect-timeout=2", "ping"], what="mariadb-admin ping")
        return True

    def root_sql(self, sql):
        """As root over the private socket (unix_socket auth: we are root)."""
        return run(["mariadb", "--no-defaults", "-S", self.socket_path, "-u", "root",
                    "-e", sql], what="mariadb (root)").stdout.decode()

    def sql(self, sql, database=None):
        """Run sql over TCP as `user` with the password; returns stdout, tab-separated."""
        result = run(["mariadb", "--no-defaults", "--protocol=TCP", "-h", self.host,
                      "-P", self.port, "-u", self.user, "-N", "-B", "--connect-timeout=5",
                      database or self.database, "-e", sql],
                     what="mariadb", env=dict(_CLEAN_ENV, MYSQL_PWD=self.password))
        return result.stdout.decode()


class RedisServer(_Server):
    """Redis with requirepass on the `default` user; no persistence."""

    kind = "redis"
    owner = "redis"
    user = "default"

    def prepare(self):
        # A config file keeps the password out of the process list.
        self._write_owned("redis.conf", "\n".join([
            f"port {self.port}", "bind 127.0.0.1", f"dir {self.dir}", 'save ""',
            "appendonly no", "daemonize no", f"requirepass {self.password}",
            # redis-cli --rdb otherwise waits 5 s for more replicas (docs/hosts.md, "Database containers").
            "repl-diskless-sync-delay 0", ""]))

    def server_argv(self):
        return ["redis-server", os.path.join(self.dir, "redis.conf")]

    def wait_ready(self):
        # PONG only: a server still loading answers LOADING.
        self.wait_until(lambda: self.cli("PING").strip() == "PONG", "redis PING")

    def cli(self, *args):
        """redis-cli with the password (from REDISCLI_AUTH, not argv); returns stdout."""
        result = run(["redis-cli", "-h", self.host, "-p", self.port, *args], what="redis-cli",
                     env=dict(_CLEAN_ENV, REDISCLI_AUTH=self.password))
        return result.stdout.decode()


def _version_key(path):
    version = path.split("/")[-2]
    return int(version) if version.isdigit() else 0
