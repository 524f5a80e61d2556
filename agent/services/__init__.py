"""Service container: one lazily built instance per external system.

Handlers reach services as ``ctx.services.docker`` and so on. Heavy imports
(docker, git) happen on first use so the supervisor and light commands stay
small. Background loops of services (samplers, watchers) are spawned through
:meth:`Services.spawn` so they have one owner (docs/design.md, "Habits": every greenlet has an
owner) and are stopped with the worker.
"""

from functools import cached_property

import gevent.pool

from agent import log
from agent.errors import AgentError
from agent.protocol import events


class EventSink:
    """Where services push events outside a call: ``target(event, data)``, the
    dispatcher's ``emit`` in the worker (None: events are checked and dropped)."""

    def __init__(self, target=None):
        self.target = target

    def emit(self, event, data):
        events.check_if_strict(event, data)    # tests: a fake target sees checked events
        if self.target is not None:
            self.target(event, data)


class Services:
    def __init__(self, cfg, events=None, ipc=None, status=None, identity_loader=None, jobs=None):
        self.cfg = cfg
        self.jobs = jobs          # the dispatcher's job port (submit, busy); None in tools and tests
        self.identity_loader = identity_loader   # cfg -> the client identity (mTLS uploads)
        self.events = events or EventSink()
        self.ipc = ipc            # supervisor IPC client, None when unavailable
        self.status = status      # callable -> dict of connection/outbox figures
        self.docker_events = None  # the events watcher, once start() runs
        self.group = gevent.pool.Group()

    def spawn(self, name, func, *args):
        greenlet = self.group.spawn(func, *args)
        greenlet.name = name
        greenlet.link_exception(log.log_greenlet_crash)
        return greenlet

    def start(self):
        """Start the services' background loops (the worker calls it once it runs): the host
        sampler, the Docker events watcher, a containerised agent joining pulseup-net
        (docs/commands.md, "Deployments"), the proxy's stored routes re-applied (docs/commands.md,
        "Domains and the proxy"), the backup schedules and the auto-update loop."""
        from agent.services import selfnet
        from agent.services.docker import events as docker_events
        self.system.start(self)
        self.docker_events = docker_events.start(self)
        selfnet.start(self)
        self.spawn("proxy-reapply", self._reapply_proxy)
        self.backups.start(self)
        self.update.start(self)

    def _reapply_proxy(self):
        try:
            self.proxy.reapply()
        except AgentError as exc:
            log.get("proxy").warning("could not re-apply the proxy configuration: %s", exc.message)

    def close(self, timeout=5.0):
        """Close the services built so far, the events watcher and the IPC client, then stop
        the background loops."""
        built = [self.__dict__[name] for name in _built_lazily(type(self)) if name in self.__dict__]
        for part in built + [self.docker_events, self.ipc]:
            close = getattr(part, "close", None)
            if close is not None:
                close()
        self.group.kill(timeout=timeout)

    @cached_property
    def system(self):
        from agent.services.system import SystemService
        return SystemService(self.cfg)

    @cached_property
    def docker(self):
        from agent.services.docker import DockerService
        return DockerService(self.cfg)

    @cached_property
    def git(self):
        from agent.services.git import GitService
        return GitService(self.cfg)

    @cached_property
    def build(self):
        from agent.services.build import BuildService
        return BuildService(self.cfg, self.docker)

    @cached_property
    def compose(self):
        from agent.services.compose import ComposeService
        return ComposeService(self.cfg, self.docker)

    @cached_property
    def nixpacks(self):
        from agent.services.nixpacks import NixpacksService
        return NixpacksService(self.cfg)

    @cached_property
    def deploy(self):
        from agent.services.deploy import DeployService
        return DeployService(self)

    @cached_property
    def container_logs(self):
        from agent.services.app.log_streams import LogStreams
        return LogStreams(self)

    @cached_property
    def monitoring(self):
        from agent.services.monitoring import MonitoringService
        return MonitoringService(self)

    @cached_property
    def database(self):
        from agent.services.database import DatabaseService
        return DatabaseService(self.cfg, docker=self.docker)

    @cached_property
    def backups(self):
        from agent.services.backups import BackupsService
        return BackupsService(self)

    @cached_property
    def proxy(self):
        from agent.services.caddy import CaddyService
        return CaddyService(self.cfg, self.docker, self.events, spawn=self.spawn)

    @cached_property
    def update(self):
        from agent.services.update import UpdateService
        return UpdateService(self.cfg, ipc=self.ipc)


def _built_lazily(cls):
    """The names of the services a Services class builds on first use."""
    return [name for klass in cls.__mro__ for name, value in vars(klass).items()
            if isinstance(value, cached_property)]
