"""The worker process: build the objects, then run them (docs/design.md, "Habits").

``worker_main`` refuses to run as root, loads or enrolls the identity, starts
the link and the services, tells systemd it is ready (docs/protocol.md, "Supervisor IPC": without
waiting for the control plane), and shuts down in three stages on SIGTERM:
stop intake, drain the pool within GRACEFUL_TIMEOUT, close with 1001.
"""

import os
import signal
import sys
import time

import gevent
import gevent.event

from agent import exitcodes, log, sdnotify
from agent.errors import AgentError
from agent.handlers import build_registry
from agent.protocol import events
from agent.protocol.ipc import OP_WORKER_STATUS
from agent.services import EventSink, Services
from agent.worker.connection import LinkStopped
from agent.worker.dispatcher import Dispatcher
from agent.worker.identity import load_identity
from agent.worker.link import Link
from agent.worker.operations import load_interrupted
from agent.worker.outbox import CallLog, Outbox
from agent.worker.recovery import Recovery

_log = log.get("worker")
QUIET_WAIT_MAX = 3600.0


class Worker:
    """Wiring only: build the parts, hand each what it needs, run them."""

    def __init__(self, cfg, identity, registry=None, ipc=None):
        self.cfg = cfg
        self.outbox = Outbox(cfg.state_dir, cfg.outbox_max_messages, cfg.outbox_max_bytes)
        self.calls = CallLog(cfg.state_dir)
        self.link = Link(cfg, identity, self.outbox, self._on_authenticated, self._reenroll)

        def build_services(jobs):
            return Services(cfg, EventSink(jobs.emit), ipc=ipc, status=self.link.status,
                            identity_loader=load_identity, jobs=jobs)

        self.dispatcher = Dispatcher(cfg, registry or build_registry(), build_services, self.outbox,
                                     self.calls, self.link.send_direct, self.link.call_server)
        self.services = self.dispatcher.services
        self.stopping = gevent.event.Event()
        self._first_auth = True
        # docs/operations.md, "Restart recovery": what a restart interrupted is answered and
        # reported before the link runs; operations that change what runs are recovered by
        # their recorded phase once the services run (their calls stay open until then).
        self.recovery = Recovery(cfg.state_dir, load_interrupted(cfg.state_dir), self.calls, self.outbox)
        self.recovery.settle(self.services)

    def _on_authenticated(self, link):
        hardware = _hardware_event(self.services)
        if hardware is not None:
            link.send_direct(events.prepare("register_hardware_info", hardware)[0])
        sdnotify.notify(f"STATUS=connected as {link.server_uid}")
        if self.services.ipc is not None:
            self.services.spawn("worker-status", self._tell_supervisor)
        if self._first_auth:
            self._first_auth = False
            self._start_after_first_auth()

    def _start_after_first_auth(self):
        """docs/commands.md, "Monitoring": monitoring starts after the first authenticated connection."""
        self.services.monitoring.start()

    def _tell_supervisor(self):
        from agent import __version__
        try:
            self.services.ipc.call(OP_WORKER_STATUS, {"connected": True, "version": __version__}, timeout=5)
        except AgentError as exc:
            _log.info("could not report status to the supervisor: %s", exc.message)

    def _reenroll(self):
        if not self.cfg.join_token:
            return None
        from agent.worker.identity import enroll
        return enroll(self.cfg, self.cfg.join_token, self.services.system.hardware_info())

    def _on_renewed(self, identity):
        """Use the new certificate from the next connect; reconnect at a quiet moment."""
        self.link.use_identity(identity)
        remaining = (identity.not_after.timestamp() - time.time())
        self.services.spawn("renewal-reconnect", self._reconnect_when_quiet, min(QUIET_WAIT_MAX, remaining / 2))

    def _reconnect_when_quiet(self, limit):
        """docs/protocol.md, "Enrollment and certificates": no call in flight, or within min(1 h, half the remaining lifetime)."""
        deadline = time.monotonic() + limit
        while self.dispatcher.running and time.monotonic() < deadline:
            gevent.sleep(1.0)
        self.link.reconnect("using the renewed certificate")

    def _start_background(self):
        """The services' loops (each owned by services.spawn), then the recoveries."""
        self.services.start()
        self.recovery.start(self.dispatcher)

    def run(self):
        """Serve until SIGTERM or the link gives up; returns the exit code."""
        self._start_background()
        from agent.worker.identity import Renewer
        renewer = Renewer(self.cfg, lambda: self.link.identity, self._on_renewed)
        self.services.spawn("renewer", renewer.run)
        link = self.services.spawn("link", self.link.run, self.dispatcher)
        sdnotify.notify("READY=1", "STATUS=connecting")
        gevent.wait([self.stopping, link], count=1)
        if link.ready() and isinstance(link.exception, LinkStopped):
            _log.error("%s", link.exception)
            self.close()
            return link.exception.exit_code
        return self.shutdown()

    def shutdown(self):
        """docs/protocol.md, "Connection": keep reading, refuse new calls, drain, close 1001."""
        sdnotify.notify("STOPPING=1")
        _log.info("shutting down: draining %d running commands", len(self.dispatcher.pool))
        drained = self.dispatcher.drain(self.cfg.graceful_timeout)
        if not drained:
            _log.warning("graceful timeout: %d commands still running", len(self.dispatcher.pool))
        self._flush_outbox(deadline=time.monotonic() + 2.0)
        self.link.stop()
        self.close()
        return exitcodes.OK

    def _flush_outbox(self, deadline):
        while len(self.outbox) and self.link.connected.is_set() and time.monotonic() < deadline:
            gevent.sleep(0.05)

    def close(self):
        self.dispatcher.pool.kill(timeout=1)
        self.services.close(timeout=2)
        self.outbox.close()
        self.calls.close()


def _hardware_event(services):
    try:
        info = services.system.hardware_info()
    except Exception:  # hardware info must not stop the connection
        _log.exception("cannot collect hardware info")
        return None
    return services.system.register_payload(info)


def _check_transport(cfg):
    if not cfg.websocket_url:
        return "WEBSOCKET_URL is not set (expected wss://HOST/ws/agent_v2)"
    if cfg.websocket_url.startswith("ws://") and not cfg.allow_insecure_transport:
        return f"refusing insecure {cfg.websocket_url}: use wss:// (ALLOW_INSECURE_TRANSPORT=true is for development only)"
    return None


def worker_main(cfg, registry=None, ipc=None):
    if os.geteuid() == 0:
        print("pulseup-agent worker: refusing to run as root; use `run` or the pulseup-worker unit",
              file=sys.stderr)
        return exitcodes.NO_PERMISSION
    problem = _check_transport(cfg)
    if problem:
        print(f"pulseup-agent worker: config error: {problem}", file=sys.stderr)
        return exitcodes.CONFIG
    from agent.worker.identity import EnrollmentError, ensure_identity
    from agent.services.system import SystemService
    try:
        identity = ensure_identity(cfg, SystemService(cfg).hardware_info())
    except EnrollmentError as exc:
        _log.error("%s", exc)
        return exc.exit_code
    if ipc is None:
        from agent.worker.ipc_client import SupervisorClient
        ipc = SupervisorClient(cfg.supervisor_socket)  # connects lazily
    worker = Worker(cfg, identity, registry, ipc)
    for signum in (signal.SIGTERM, signal.SIGINT):
        # docs/design.md, "Habits": handlers only record; the run loop acts
        gevent.signal_handler(signum, worker.stopping.set)
    return worker.run()
