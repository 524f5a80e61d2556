"""Talk to the database containers the agent made, with the engines' own clients inside them."""
import subprocess

PASSWORD = "s3cret-Pw_42"


def exec_out(docker_client, name, argv, env=None):
    """stdout of argv inside container `name`; AssertionError with stderr when it fails."""
    container = docker_client.containers.get(name)
    result = container.exec_run(argv, environment=env or {}, demux=True)
    out, err = result.output
    assert result.exit_code == 0, f"{argv} failed ({result.exit_code}): {(err or b'').decode()}"
    return (out or b"").decode()


def psql(docker_client, uid, sql, database="app"):
    return exec_out(docker_client, f"pulseup-db-{uid}",
                    ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "admin",
                     "-d", database, "-c", sql])


def mysql(docker_client, uid, sql, database="app", env_prefix="MARIADB"):
    return exec_out(docker_client, f"pulseup-db-{uid}",
                    ["mysql", "-u", "root", "-N", "-B", database, "-e", sql],
                    env={"MYSQL_PWD": PASSWORD})


def redis(docker_client, uid, *args):
    return exec_out(docker_client, f"pulseup-db-{uid}",
                    ["redis-cli", "--no-auth-warning", *args], env={"REDISCLI_AUTH": PASSWORD})


def redis_dump_all(docker_client, uid):
    """{key: (type, value)} of every key, for exact comparison."""
    keys = sorted(k for k in redis(docker_client, uid, "--scan").split("\n") if k)
    data = {}
    for key in keys:
        kind = redis(docker_client, uid, "TYPE", key).strip()
        if kind == "string":
            value = redis(docker_client, uid, "GET", key)
        elif kind == "hash":
            value = redis(docker_client, uid, "HGETALL", key)
        elif kind == "list":
            value = redis(docker_client, uid, "LRANGE", key, "0", "-1")
        else:
            value = redis(docker_client, uid, "DUMP", key)
        data[key] = (kind, value)
    return data


def decompress(path):
    """Raw dump bytes of a stored backup, with the system's zstd/gzip (not the agent's code)."""
    tool = ["zstd", "-d", "-c", "-q", path] if path.endswith(".zst") else ["gzip", "-d", "-c", path]
    return subprocess.run(tool, check=True, capture_output=True, timeout=300).stdout
