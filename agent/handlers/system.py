"""``agent.hardware.info`` and ``server.stats.live`` (docs/commands.md, "Agent commands").

The reply schemas below are the shapes of docs/commands.md, "Shapes" (HardwareInfo) and
2.2; the unit tests validate the service's output against them, so a field
added or renamed in one place and not the other fails a test.
"""

from marshmallow import RAISE, Schema, fields

from agent.protocol.fields import NoArguments


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class CpuSchema(_Strict):
    model = fields.String(required=True)
    cores = fields.Integer(required=True, strict=True)
    arch = fields.String(required=True)


class InterfaceSchema(_Strict):
    name = fields.String(required=True)
    ip = fields.String(required=True)
    mac = fields.String(required=True)


class MemorySchema(_Strict):
    total = fields.Integer(required=True, strict=True)


class StorageSchema(_Strict):
    total = fields.Integer(required=True, strict=True)
    type = fields.String(required=True)


class NetworkSchema(_Strict):
    interfaces = fields.List(fields.Nested(InterfaceSchema), required=True)


class OsSchema(_Strict):
    name = fields.String(required=True)
    version = fields.String(required=True)
    kernel = fields.String(required=True)


class HardwareInfoSchema(_Strict):
    cpu = fields.Nested(CpuSchema, required=True)
    memory = fields.Nested(MemorySchema, required=True)
    storage = fields.Nested(StorageSchema, required=True)
    network = fields.Nested(NetworkSchema, required=True)
    os = fields.Nested(OsSchema, required=True)
    hostname = fields.String(required=True)
    primary_ip = fields.String()
    public_ip = fields.String(required=True)
    cpu_physical_cores = fields.Integer(required=True, strict=True)
    cpu_logical_count = fields.Integer(required=True, strict=True)
    total_memory_gb = fields.Float(required=True)
    storage_total_gb = fields.Float(required=True)


class LiveStatsSchema(_Strict):
    cpu_percent = fields.Float(required=True)
    memory_used_gb = fields.Float(required=True)
    memory_total_gb = fields.Float(required=True)
    memory_usage_percent = fields.Float(required=True)
    disk_used_gb = fields.Float(required=True)
    disk_total_gb = fields.Float(required=True)
    disk_usage_percent = fields.Float(required=True)
    network_bytes_in = fields.Integer(required=True, strict=True)
    network_bytes_out = fields.Integer(required=True, strict=True)
    uptime_seconds = fields.Integer(required=True, strict=True)
    load_avg_1 = fields.Float(required=True)
    load_avg_5 = fields.Float(required=True)
    load_avg_15 = fields.Float(required=True)
    timestamp = fields.String(required=True)


def hardware_info(ctx, request):
    return ctx.services.system.hardware_info()


def stats_live(ctx, request):
    return ctx.services.system.live_stats()


def register(registry):
    registry.add("agent.hardware.info", hardware_info, schema=NoArguments())
    registry.add("server.stats.live", stats_live, schema=NoArguments())
