"""Command dispatch: validate, admit, run in a bounded pool, answer.

The reader hands every call/event/legacy message to :meth:`Dispatcher.handle`,
which never waits (docs/protocol.md, "Dispatch"): unknown commands and invalid payloads are
answered before any greenlet exists; admitted calls run in one bounded
``gevent.pool.Pool``; a call that finds the pool full waits in a bounded list
for at most ``ADMISSION_WAIT`` and is then answered ``unavailable``.
"""

import collections
import time
import traceback

import gevent
import gevent.pool

from agent import __version__, log
from agent.errors import AgentError
from agent.handlers.registry import Command
from agent.services.context import CallContext
from agent.protocol import envelope, events
from agent.protocol.fields import load_request
from agent.worker.operations import Job, OperationTable

_log = log.get("dispatcher")
ADMISSION_WAIT = 1.0
MAX_WAITING = 1024
STARTED = time.monotonic()


class Dispatcher:
    """Runs calls, and is the job port of the services (:meth:`submit`, :meth:`busy`,
    :meth:`emit`): ``build_services(jobs)`` makes the services with this dispatcher as their
    port, so nothing is wired in after construction (docs/design.md, "Layers")."""

    def __init__(self, cfg, registry, build_services, outbox, calls, send_direct, call_server=None):
        self.cfg = cfg
        self.registry = registry
        self.outbox = outbox
        self.calls = calls
        self.send_direct = send_direct      # frame -> None; for non-queued frames
        self.call_server = call_server
        self.pool = gevent.pool.Pool(cfg.max_concurrent_commands)
        self.group = gevent.pool.Group()    # pump and deadline timers
        self.operations = OperationTable(cfg.state_dir)
        self.waiting = collections.deque()
        self.running = {}                   # call_id -> Job
        self.draining = False
        self._pump = None
        self.services = build_services(self)

    # -- intake ----------------------------------------------------------
    def handle(self, message):
        """Act on one call, event or legacy message; never blocks."""
        if message.type == "call" and self._answered_before(message.call_id):
            return
        try:
            job = self._prepare(message)
        except AgentError as exc:
            self._answer_error(message, exc)
            return
        if job is not None:
            self._admit(job)

    # -- the job port handed to services ---------------------------------
    def submit(self, name, request, func, spec, not_started=None):
        """Run ``func(ctx, request)`` as an operation the agent made itself, listed as ``name``
        (a scheduled backup, a restart recovery): same operation table, per-service FIFO,
        deadline and cancel as a call, under ``spec`` (an OperationSpec from
        agent/operations.py). ``not_started(error)`` is called when the job ends before
        ``func`` ran (cancelled or expired while queued, refused, shutting down)."""
        not_started = not_started or _log_not_started
        if self.draining:
            not_started(AgentError("unavailable", "agent is shutting down"))
            return
        started = []

        def run(ctx, req):
            started.append(True)
            return func(ctx, req)

        def finished(job):
            if not started:
                not_started(job.error or _not_started_error(job))

        job = Job(None, Command(name, run, operation=spec), request, spec.default_timeout(request), spec)
        job.on_finished = finished
        self._admit(job)

    def requests(self, kind, service_uid):
        """The requests of the service's running or queued operations of ``kind``."""
        return [job.request for job in list(self.operations.by_id.values())
                if job.spec.kind == kind and (job.request or {}).get("service_uid") == service_uid]

    def busy(self, kind, service_uid):
        """An operation of ``kind`` for the service is running or queued."""
        return bool(self.requests(kind, service_uid))

    def _answered_before(self, call_id):
        """Idempotency (docs/protocol.md, "Delivery"): never run a call_id twice."""
        if call_id in self.calls.running:
            return True
        frame = self.calls.answered(call_id)
        if frame is None:
            return False
        if not self.outbox.has_key(call_id):
            self.outbox.put(frame, key=call_id)
        return True

    def _prepare(self, message):
        if message.wrapper_error:
            raise AgentError("invalid_argument", message.wrapper_error)
        command = self.registry.get(message.event)
        if command is not None and message.wrapped and not command.wrappable:
            command = None   # docs/commands.md, "Agent commands": agent.config_updated is not reachable wrapped
        if command is None:
            label = "command" if message.wrapped else "event"
            raise AgentError("unimplemented", f"unknown {label}: {message.event}")
        if self.draining:
            raise AgentError("unavailable", "agent is shutting down")
        if message.event in self.cfg.pulseup_disabled_commands:
            raise AgentError("permission_denied", f"{message.event} is disabled on this host")
        if message.type == "call" and self.outbox.full():
            raise AgentError("unavailable", "outbox is full; try again after the agent reconnects")
        if command.raw:
            self._answer_inline(message, command)
            return None
        data = message.data if message.data is not None else {}
        timeout = self._timeout(command, data)
        request = load_request(command.schema, data) if command.schema is not None else data
        spec = command.operation.for_request(request) if command.operation else None
        if command.operation is not None and spec is None:
            timeout = self.cfg.command_timeout
        return Job(message, command, request, timeout, spec)

    def _timeout(self, command, data):
        if not isinstance(data, dict):
            return self.cfg.command_timeout
        values = {k: data[k] for k in ("timeout_seconds", "_timeout_s") if k in data}
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise AgentError("invalid_argument", f"{key}: must be a positive number", field=key)
        if len(set(values.values())) > 1:
            raise AgentError("invalid_argument", "timeout_seconds and _timeout_s differ", field="timeout_seconds")
        spec = command.operation
        if spec is None:
            return self.cfg.command_timeout
        if values:
            requested = next(iter(values.values()))
            if requested > spec.timeout_max:
                raise AgentError("invalid_argument", f"timeout_seconds: at most {spec.timeout_max:g}",
                                 field="timeout_seconds")
            return float(requested)
        return spec.default_timeout(data)

    def _answer_inline(self, message, command):
        """agent.ping and friends: answered by the reader itself, no lock, no queue."""
        ctx = CallContext(self.services, command.name, message.call_id)
        data = message.data if message.data_present else {}
        try:
            result = command.func(ctx, data)
        except AgentError as exc:
            self._answer_error(message, exc, durable=False)
            return
        self._answer(message, result, durable=False)

    # -- admission -------------------------------------------------------
    def _admit(self, job):
        if job.call_id and job.message is not None and job.message.type == "call":
            self.calls.start(job.call_id)
            self.running[job.call_id] = job
        if job.spec is not None:
            try:
                may_start = self.operations.admit(job)
            except AgentError as exc:
                self._finish(job, error=exc)
                return
            if job.spec.preempting:
                self._preempt(job)
            self.group.spawn(self._deadline_timer, job)
            if not may_start:
                job.phase = "queued"
                if job.spec.queued_event is not None:
                    # docs/commands.md, "Operations": a waiting deploy emits in_progress with phase queued
                    self.emit(*job.spec.queued_event(job.request))
                return
        self._to_pool(job)

    def _preempt(self, job):
        holder, queued = self.operations.others_of_key(job)
        error = AgentError("cancelled", f"cancelled by {job.command.name}")
        for victim in queued:
            self.operations.dequeue(victim)
            self._finish(victim, error=error)
        if holder is not None and holder is not job:
            holder.stop(error)

    def _to_pool(self, job):
        if self.pool.free_count() > 0 and not self.waiting:
            self._spawn(job)
            return
        if len(self.waiting) >= MAX_WAITING:
            self._finish(job, error=AgentError("unavailable", "agent is busy: too many waiting commands"))
            return
        self.waiting.append((time.monotonic(), job))
        if self._pump is None or self._pump.dead:
            self._pump = self.group.spawn(self._pump_waiting)

    def _pump_waiting(self):
        while self.waiting:
            since, job = self.waiting[0]
            left = ADMISSION_WAIT - (time.monotonic() - since)
            if left <= 0 or self.draining:
                self.waiting.popleft()
                self._finish(job, error=AgentError("unavailable", "agent is busy: command pool is full"))
                continue
            if self.pool.wait_available(timeout=left) and self.pool.free_count() > 0:
                self.waiting.popleft()
                self._spawn(job)

    def _spawn(self, job):
        job.state, job.started_wall = "running", time.time()
        job.greenlet = self.pool.spawn(self._run, job)
        if job.spec is None:
            self.group.spawn(self._deadline_timer, job)

    def _deadline_timer(self, job):
        gevent.sleep(max(0.0, job.deadline - time.monotonic()))
        if job.answered:
            return
        error = AgentError("deadline_exceeded", f"{job.command.name}: deadline exceeded")
        if job.state == "queued":
            self.operations.dequeue(job)
            self._finish(job, error=error)
        else:
            job.stop(error)

    # -- running ---------------------------------------------------------
    def _run(self, job):
        ctx = CallContext(self.services, job.command.name, job.call_id, job.deadline,
                          job if job.spec else None, self.emit, self.call_server)
        try:
            result = job.command.func(ctx, job.request)
        except AgentError as exc:
            self._finish(job, error=job.stop_error if job.stop_error is not None else exc)
        except gevent.GreenletExit:
            self._finish(job, error=job.stop_error or AgentError("cancelled", "operation cancelled"))
        except Exception as exc:  # the dispatcher is one of the two places that catch everything
            _log.error("command %s failed: %s", job.command.name, traceback.format_exc())
            self._finish(job, error=AgentError("internal", f"internal error: {type(exc).__name__}: {exc}"))
        else:
            self._finish(job, result=result)
        finally:
            ctx.close()

    def _finish(self, job, result=None, error=None):
        if job.answered:
            return
        job.answered, job.error = True, error
        self.running.pop(job.call_id, None)
        if job.spec is not None:
            following = self.operations.release(job)
            if following is not None:
                self._to_pool(following)
        if error is not None:
            self._answer_error(job.message, error, job.operation_id)
        else:
            self._answer(job.message, result)
        if job.on_finished is not None:
            job.on_finished(job)

    # -- answers ---------------------------------------------------------
    def _answer(self, message, result, durable=True):
        if message is None:          # a job the agent made itself: nobody waits for an answer
            return
        if message.type == "legacy":
            self.send_direct(envelope.legacy_response(True, result))
        elif message.type == "call":
            self._respond(message.call_id, envelope.response_frame(message.call_id, True, result), durable)

    def _answer_error(self, message, exc, operation_id=None, durable=True):
        if message is None:
            _log.warning("agent operation %s failed: %s (%s)", operation_id, exc.message, exc.code)
            return
        command = self.registry.get(message.event) if message.event else None
        if command is not None and command.error_details is not None:
            exc.details = dict(exc.details, **command.error_details(exc))
        if message.type == "legacy":
            self.send_direct(envelope.legacy_response(False, exc.reply_data(), exc.message, exc.code))
        elif message.type == "call":
            self._respond(message.call_id, envelope.error_response(message.call_id, exc, operation_id), durable)
        else:
            _log.warning("event %s failed: %s (%s)", message.event, exc.message, exc.code)

    def _respond(self, call_id, frame, durable=True):
        """A durable reply goes through the call log and the outbox; the reply of an inline
        command (agent.ping: no effect, cheap to ask again) is written directly and never
        journaled (docs/protocol.md, "Delivery")."""
        if not durable:
            self.send_direct(frame)
            return
        fitted = envelope.outbound(frame)      # a response always comes back, maybe as an error
        self.calls.finish(call_id, fitted[0])
        self.outbox.put_outbound(fitted, key=call_id)

    def emit(self, event, data):
        """Queue (durable) or send if connected (droppable) an event, as the event catalogue
        says (agent/protocol/events.py)."""
        frame, durable = events.prepare(event, data)   # encoded strictly where it is queued
        if durable:
            self.outbox.put(frame)
        else:
            self.send_direct(frame, droppable=True)

    # -- cancel and shutdown ---------------------------------------------
    def cancel(self, call_id=None, job=None, reason="cancelled by the control plane"):
        """Cancel a call; returns "cancelling"/"not_cancellable" or raises AgentError(not_found)."""
        job = job or self.running.get(call_id)
        if job is None or job.answered:
            raise AgentError("not_found", f"no running call {call_id}")
        if job.spec is None or not job.spec.cancellable:
            raise AgentError("not_cancellable", f"{job.command.name} cannot be cancelled")
        error = AgentError("cancelled", reason)
        if job.state == "queued":
            self.operations.dequeue(job)
            self._finish(job, error=error)
            return "cancelling"
        return job.stop(error)

    def drain(self, timeout):
        """Stop intake (new calls get unavailable) and wait for running calls."""
        self.draining = True
        self.pool.join(timeout=timeout)
        return len(self.pool) == 0

    def uptime(self):
        return time.monotonic() - STARTED

    @property
    def version(self):
        return __version__


def _log_not_started(error):
    _log.warning("agent operation not started: %s (%s)", error.message, error.code)


def _not_started_error(job):
    if time.monotonic() >= job.deadline:
        return AgentError("deadline_exceeded", f"{job.command.name} expired before it could start")
    return AgentError("unavailable", "agent is shutting down")
