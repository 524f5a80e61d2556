"""``monitoring.*`` (docs/commands.md, "Monitoring"): thin calls into MonitoringService."""

from agent.protocol.fields import NoArguments
from agent.services.monitoring_rules import AlertsSetupSchema


def status(ctx, request):
    return ctx.services.monitoring.status()


def start(ctx, request):
    return ctx.services.monitoring.start()


def stop(ctx, request):
    return ctx.services.monitoring.stop()


def container_metrics(ctx, request):
    return ctx.services.monitoring.container_metrics()


def alerts_setup(ctx, request):
    return ctx.services.monitoring.setup_rules(request["rules"])


def register(registry):
    registry.add("monitoring.status", status, NoArguments())
    registry.add("monitoring.start", start, NoArguments())
    registry.add("monitoring.stop", stop, NoArguments())
    registry.add("monitoring.container.metrics", container_metrics, NoArguments())
    registry.add("monitoring.alerts.setup", alerts_setup, AlertsSetupSchema())
