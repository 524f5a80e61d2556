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


# One Lua script lists every key with its type and full value (sorted), so a dataset can be
# compared exactly in one exec instead of thousands.
_DUMP_LUA = """
local keys = redis.call('KEYS', '*')
table.sort(keys)
local out = {}
for _, k in ipairs(keys) do
  local t = redis.call('TYPE', k)['ok']
  local v
  if t == 'string' then v = {redis.call('GET', k)}
  elseif t == 'hash' then v = redis.call('HGETALL', k)
  elseif t == 'list' then v = redis.call('LRANGE', k, 0, -1)
  elseif t == 'set' then v = redis.call('SMEMBERS', k); table.sort(v)
  else v = {'unsupported'} end
  table.insert(out, k .. '|' .. t .. '|' .. table.concat(v, ','))
end
return out
"""
POPULATE_LUA = "for i = 1, tonumber(ARGV[1]) do redis.call('SET', 'bulk:' .. i, string.rep('v', 64) .. i) end return 1"


def redis_dump_all(docker_client, uid):
    """Every key with its type and value, sorted, as text (exact comparison of datasets)."""
    return redis(docker_client, uid, "EVAL", _DUMP_LUA, "0")


def decompress(path):
    """Raw dump bytes of a stored backup, with the system's zstd/gzip (not the agent's code)."""
    tool = ["zstd", "-d", "-c", "-q", path] if path.endswith(".zst") else ["gzip", "-d", "-c", path]
    return subprocess.run(tool, check=True, capture_output=True, timeout=300).stdout
