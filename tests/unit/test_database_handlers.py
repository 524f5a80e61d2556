"""Request schemas and registration of the database commands (docs/commands.md, "Identifiers and
values", "Operations", "Databases")."""
import pytest

from agent.errors import AgentError
from agent.handlers import backups, database
from agent.handlers.registry import Registry
from agent.protocol.fields import load_request
from agent.services.database import engines


def load(schema, data):
    return load_request(schema, data)


def refused(schema, data, field):
    with pytest.raises(AgentError) as err:
        load(schema, data)
    assert err.value.code == "invalid_argument" and err.value.field == field
    return err.value


def test_deploy_schema():
    s = database.DeploySchema()
    ok = load(s, {"service_uid": "db1", "Type": "PostgreSQL", "password": "pw", "port": 5433})
    assert ok["type"] == "PostgreSQL" and ok["public"] is False and ok["port"] == 5433
    refused(s, {"service_uid": "db1", "type": "oracle", "password": "pw"}, "type")
    refused(s, {"service_uid": "db1", "type": "mysql", "password": "pw", "username": "root"}, "username")
    assert load(s, {"service_uid": "db1", "type": "postgresql", "password": "pw", "username": "root"})
    refused(s, {"service_uid": "db1", "type": "redis", "password": "pw", "database": "16"}, "database")
    assert load(s, {"service_uid": "db1", "type": "redis", "password": "pw", "database": "15"})
    refused(s, {"service_uid": "db1", "type": "mariadb", "password": "pw", "database": "a;b"}, "database")
    refused(s, {"service_uid": "db1", "type": "redis", "password": "a\nb"}, "password")
    refused(s, {"service_uid": "db1", "type": "redis", "password": "x" * 257}, "password")
    refused(s, {"service_uid": "db1", "type": "redis", "password": "pw", "port": "5432"}, "port")
    refused(s, {"service_uid": "-bad", "type": "redis", "password": "pw"}, "service_uid")
    refused(s, {"service_uid": "db1", "type": "redis", "password": "pw", "public": "yes"}, "public")


def test_backup_schemas():
    s = backups.BackupCreateSchema()
    ok = load(s, {"service_uid": "db1", "backup_uid": "b1"})
    assert ok["compression"] == "zstd"
    long_uid = "auto-" + "s" * 64 + "-0f0e0d0c-0b0a-4098-8765-43210fedcba9"
    assert load(s, {"service_uid": "db1", "backup_uid": long_uid})
    refused(s, {"service_uid": "db1", "backup_uid": "../x"}, "backup_uid")
    refused(s, {"service_uid": "db1", "backup_uid": "b", "compression": "xz"}, "compression")
    refused(s, {"service_uid": "db1", "backup_uid": "b", "format": "tar"}, "format")
    r = backups.BackupRestoreSchema()
    assert load(r, {"service_uid": "db1", "backup_uid": "b"})["safety_backup"] is True
    refused(r, {"service_uid": "db1"}, "backup_path")


def test_register_operations():
    registry = Registry()
    database.register(registry)
    backups.register(registry)
    assert {"database.deploy", "database.backup.create", "database.backup.list",
            "database.backup.restore"} <= set(registry.names())
    request = {"service_uid": "db1", "backup_uid": "b1"}
    spec = registry.get("database.backup.create").operation
    assert spec.operation_id(request) == "backup:b1" and spec.lock_key(request) == "db1"
    assert (spec.timeout_default, spec.timeout_max) == (3600, 86400)
    deploy = registry.get("database.deploy").operation
    assert deploy.operation_id(request) == "database_deploy:db1" and (deploy.timeout_default, deploy.timeout_max) == (600, 3600)
    assert registry.get("database.backup.restore").operation.operation_id(request) == "restore:db1"
    assert registry.get("database.backup.list").operation is None


def test_scripts_never_hold_secrets_and_quote_names():
    for engine in engines.ENGINES.values():
        env = engine.env("admin", "pw-SECRET", "app")
        assert "pw-SECRET" in env.values()
        scripts = [engine.probe, engine.version, engine.dump_script("app", engine.format_for(None), "b1")]
        if engine.name != "redis":
            scripts.append(engine.restore_script("app", engine.format_for(None)))
        assert all("pw-SECRET" not in script for script in scripts)
    assert engines.quote("it's") == "'it'\"'\"'s'"
    assert "--format=plain" in engines.ENGINES["postgresql"].dump_script("app", "pg_plain", "b")
    assert engines.parse_version("redis", "# Server\r\nredis_version:7.0.15\r\n") == "7.0.15"


def test_backup_list_handler_without_docker(tmp_path):
    from agent import config
    from agent.services.context import CallContext
    from agent.services import Services

    services = Services(config.defaults().replace(pulseup_backup_dir=str(tmp_path)))
    ctx = CallContext(services, "database.backup.list")
    assert backups.backup_list(ctx, {"service_uid": "none"}) == {"status": "success", "backups": [], "count": 0}
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "old.rdb").write_bytes(b"REDIS0009")
    reply = backups.backup_list(ctx, load(backups.BackupListSchema(), {"service_uid": "svc"}))
    assert reply["count"] == 1 and reply["backups"][0]["legacy"] is True and reply["backups"][0]["type"] == "redis"
