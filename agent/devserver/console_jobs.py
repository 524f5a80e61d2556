"""What the console asks agents to do in the background, and what it knows about them.

A job is one long call (deploy, rollback, start/stop/restart, database deploy, backup,
restore, upload) run in a greenlet of `Jobs._group`, owned by the console and killed
with it. Its outcome is kept in memory and published to the agent's SSE subscribers as a
`console_job` frame. A deploy job also follows its deployment log: it starts the agent's
log stream once the deploy runs, and starts it again (from the last offsets) if the stream
ended while the deploy was still queued or running (docs/devserver.md, "Web console").
"""

import collections
import itertools
import logging
import time

import gevent
import gevent.pool
import gevent.queue

from agent.devserver.hub import CallTimeout, NotConnected

log = logging.getLogger(__name__)

MAX_JOBS = 500
STREAM_INTERVAL_MS = 500
TERMINAL = ("completed", "failed", "cancelled")
SERVICE_EVENTS = ("update_service_status", "update_deployment_status", "backup_status_update",
                  "rollback_status_update", "backup_download_status")


class Job:
    _ids = itertools.count(1)

    def __init__(self, uid, kind, title, service_uid=None, deployment_uid=None):
        self.id = next(self._ids)
        self.uid, self.kind, self.title = uid, kind, title
        self.service_uid, self.deployment_uid = service_uid, deployment_uid
        self.state = "running"
        self.error = ""
        self.reply = None
        self.started_at = time.time()
        self.ended_at = None

    def as_dict(self):
        return {"id": self.id, "kind": self.kind, "title": self.title, "state": self.state,
                "error": self.error, "service_uid": self.service_uid,
                "deployment_uid": self.deployment_uid, "started_at": self.started_at,
                "ended_at": self.ended_at}


def call(server, uid, event, data, timeout):
    """The agent's reply; an unreachable agent or a timeout is a failed reply, never raised."""
    try:
        return server.hub.call(uid, event, data, timeout)
    except NotConnected:
        return {"success": False, "data": None, "error": "agent not connected", "code": ""}
    except CallTimeout:
        return {"success": False, "data": None, "error": "no reply from the agent in time",
                "code": "deadline_exceeded"}


class Jobs:
    def __init__(self, server):
        self.server = server
        self._jobs = collections.OrderedDict()
        self._group = gevent.pool.Group()

    def close(self):
        self._group.kill(block=False)

    def background(self, fn, *args):
        """Run `fn(*args)` in a greenlet the console owns."""
        return self._group.spawn(fn, *args)

    def for_agent(self, uid):
        return [j for j in reversed(self._jobs.values()) if j.uid == uid]

    def find(self, uid, deployment_uid):
        for job in reversed(self._jobs.values()):
            if job.uid == uid and job.deployment_uid == deployment_uid:
                return job
        return None

    def start(self, uid, kind, title, event, data, timeout=3600, service_uid=None):
        """Run one call as a job; returns the Job at once."""
        job = self._new(uid, kind, title, service_uid)
        self._group.spawn(self._run, job, event, data, timeout)
        return job

    def deploy(self, uid, request, domain=None):
        job = self._new(uid, "deploy", "Deploy %s" % request["service_uid"],
                        request["service_uid"], request["deployment_uid"])
        self._group.spawn(self._run_deploy, job, request, domain)
        return job

    def _new(self, uid, kind, title, service_uid=None, deployment_uid=None):
        job = Job(uid, kind, title, service_uid, deployment_uid)
        self._jobs[job.id] = job
        while len(self._jobs) > MAX_JOBS:
            self._jobs.popitem(last=False)
        self._publish(job)
        return job

    def _run(self, job, event, data, timeout):
        self._finish(job, call(self.server, job.uid, event, data, timeout))

    def _finish(self, job, reply):
        job.reply = reply
        job.state = "succeeded" if reply.get("success") else "failed"
        job.error = "" if reply.get("success") else str(reply.get("error") or "failed")
        job.ended_at = time.time()
        self._publish(job)

    def _publish(self, job):
        st = self.server.hub.known(job.uid)
        if st is not None:
            self.server.hub.publish(st, "console_job", {"type": "console_job", "data": job.as_dict()})

    # Deployments -------------------------------------------------------------------------

    def _run_deploy(self, job, request, domain):
        hub = self.server.hub
        queue = hub.subscribe(job.uid)
        try:
            running = self._group.spawn(call, self.server, job.uid, "service.app.deploy",
                                        request, request.get("timeout_seconds", 1800) + 60)
            self._follow_log(job, queue, running)
            reply = running.get()
            if reply.get("success") and domain:
                reply = self._add_domain(job, request, domain) or reply
            self._finish(job, reply)
        finally:
            hub.unsubscribe(job.uid, queue)

    def _follow_log(self, job, queue, running):
        """Start the deployment log stream when the deploy runs; restart it when it ended
        early. Returns when the deploy call has its reply."""
        offsets, streaming = {}, False
        while not running.ready():
            try:
                name, frame = queue.get(timeout=0.5)
            except gevent.queue.Empty:
                continue
            data = frame.get("data") if isinstance(frame.get("data"), dict) else {}
            if data.get("deployment_uid") != job.deployment_uid:
                continue
            if name == "update_deployment_status" and not streaming \
                    and data.get("status") == "in_progress" and data.get("phase") != "queued":
                streaming = self._start_stream(job, offsets)
            elif name == "deployment_log_chunk" and data.get("final"):
                offsets = data.get("offsets") or offsets
                streaming = False
            elif name == "deployment_log_chunk" and data.get("log_type") in ("build", "deploy"):
                offsets[data["log_type"]] = data.get("end_offset", 0)

    def _start_stream(self, job, offsets):
        reply = call(self.server, job.uid, "service.deploy.logs.stream.start",
                     {"deployment_uid": job.deployment_uid, "service_uid": job.service_uid,
                      "offsets": offsets, "include_steps": True,
                      "flush_interval_ms": STREAM_INTERVAL_MS}, 30)
        if not reply.get("success"):
            log.info("deployment log stream of %s not started: %s", job.deployment_uid,
                     reply.get("error"))
        return bool(reply.get("success"))

    def _add_domain(self, job, request, domain):
        """Point `domain` at the new container; a failure replaces the deploy's reply."""
        port = request.get("internal_port") or 80
        reply = call(self.server, job.uid, "service.domain.manage",
                     {"action": "upsert", "service_uid": request["service_uid"],
                      "domain": domain, "port": port, "managed_certificate": False}, 700)
        if reply.get("success"):
            return None
        return dict(reply, error="deployed, but the domain failed: %s" % reply.get("error"))
