"""Restart recovery of an interrupted container swap (deploy or rollback; docs/operations.md
"Restart recovery", issue 16 item 7).

The swap's phase record (agent/services/interrupted.py) says how far it got:

- before ``switch_traffic`` (``deploy_container``, ``stop_previous``, ``health_check``, or no
  record at all): the candidate is removed and the previous version is started again if it
  was stopped; outcome ``failed``, the previous version serves.
- from ``switch_traffic`` on (``switch_traffic``, ``cleanup``, ``done``): when the candidate
  still runs, the switch is finished (candidate renamed to its final name, traffic pointed at
  it, every other app container of the service removed); outcome ``completed``. When it does
  not run any more, the switch goes back to the previous version (``failed``).

Either way exactly one app version of the service is left, and :class:`Outcome` says which.
"""

import time
from dataclasses import dataclass, field

import gevent

from agent import log
from agent.errors import AgentError
from agent.services.docker import CANDIDATE_SUFFIX, DEPLOYMENT_UID, labels_of, state_of, translate
from agent.services.interrupted import RESTARTED, Result
from agent.values import rfc3339

_log = log.get("deploy.recovery")
NO_RETURN = ("switch_traffic", "cleanup", "done")
START_WAIT = 30.0
STOP_GRACE = 30


@dataclass
class Outcome:
    """What restart recovery did: ``status`` is ``completed`` (the new version serves) or
    ``failed`` (the previous version, or nothing, serves)."""
    status: str
    serving: str = None
    actions: list = field(default_factory=list)
    phase: str = None

    def summary(self):
        done = "; ".join(self.actions) if self.actions else "nothing to undo"
        serves = f"{self.serving} serves" if self.serving else "no version of the service runs"
        where = f"interrupted at phase {self.phase}" if self.phase else "interrupted before the container swap"
        verdict = "finished by restart recovery" if self.status == "completed" else "not applied"
        return f"{where}, {verdict}: {done}; {serves}"


def result_of(record, outcome):
    """The interrupted.Result of a recovered swap: the service's status, the call's answer
    and the terminal event of the deploy or rollback."""
    message = outcome.summary()
    details = {"recovery": outcome.status, "serving_container": outcome.serving, "phase": outcome.phase,
               "actions": outcome.actions}
    status = "running" if outcome.serving else "failed"
    return Result(status, message, details, operation_events(record, outcome.status, message, outcome.serving))


def operation_events(record, status, message, serving=None):
    """The terminal update_deployment_status / rollback_status_update of a recovered swap."""
    stamp = int(time.time())
    if record["kind"] == "deploy" and record.get("deployment_uid"):
        data = {"deployment_uid": record["deployment_uid"], "service_uid": record["service_uid"],
                "status": status, "timestamp": stamp}
        if status == "completed":
            data.update(message=f"{RESTARTED}; {message}", container_name=serving,
                        deployment_version=record.get("version"))
        else:
            data.update(error=f"{RESTARTED}; {message}", code="internal")
        return [("update_deployment_status", {k: v for k, v in data.items() if v is not None})]
    if record["kind"] == "rollback":
        data = {"service_uid": record["service_uid"], "status": "running" if status == "completed" else "failed",
                "message": f"{RESTARTED}; {message}", "timestamp": stamp,
                "rolled_back_to": record.get("rolled_back_to")}
        if data["status"] == "failed":
            data["code"] = "internal"
        return [("rollback_status_update", {k: v for k, v in data.items() if v is not None})]
    return []


def recover_swap(services, record):
    """Bring the service of ``record`` to one version; returns an Outcome. Raises AgentError
    (Docker unreachable...) when it cannot act; the caller retries."""
    docker = services.docker
    uid = record["service_uid"]
    containers = docker.find_service_containers(uid)
    candidate = _find(containers, record.get("candidate_id"), record.get("candidate"), record.get("final"))
    others = [c for c in containers if candidate is None or c.id != candidate.id]
    previous = _find(others, record.get("previous_id"), record.get("previous"))
    if previous is None and not record.get("phase"):     # no record: what Docker shows
        apps = docker.app_containers(uid, others)
        previous = docker.active_container(uid, others) or (apps[0] if apps else None)
    phase = record.get("phase")
    if phase in NO_RETURN and candidate is not None and state_of(candidate) == "running":
        outcome = _finish(services, record, candidate, others)
    elif not phase and _already_serving(record, previous):
        outcome = Outcome("completed", previous.name, phase=phase)
    else:
        outcome = _back(services, record, candidate, previous, others)
    outcome.phase = phase
    return outcome


def _find(containers, container_id, *names):
    for container in containers:
        if container_id and container.id == container_id:
            return container
    for container in containers:
        if container.name in [n for n in names if n]:
            return container
    return None


def _already_serving(record, active):
    """A deploy whose record was already removed: its own container serves, it had ended."""
    return (record.get("kind") == "deploy" and active is not None and record.get("deployment_uid")
            and labels_of(active).get(DEPLOYMENT_UID) == record["deployment_uid"]
            and state_of(active) == "running")


def _finish(services, record, candidate, others):
    final = record.get("final") or candidate.name.removesuffix(CANDIDATE_SUFFIX)
    actions = []
    if candidate.name != final:
        with translate(f"rename {candidate.name}"):
            candidate.rename(final)
            candidate.reload()
        actions.append(f"renamed the candidate to {final}")
    try:
        _switch(services, record["service_uid"], final, record.get("port"), actions)
    except AgentError as exc:
        _log.warning("recovery could not switch traffic to %s: %s", final, exc.message)
        actions.append(f"switching traffic to {final} failed ({exc.message})")
        previous = _find(others, record.get("previous_id"), record.get("previous"))
        return _back(services, record, candidate, previous, others, actions)
    for container in _app_versions(services, record["service_uid"], others):
        _remove(services, container, actions)
    return Outcome("completed", final, actions)


def _back(services, record, candidate, previous, others, actions=None):
    actions = [] if actions is None else actions
    for container in [candidate] + [c for c in others if c.name.endswith(CANDIDATE_SUFFIX)]:
        if container is not None:
            _remove(services, container, actions)
    if previous is None:
        return Outcome("failed", None, actions)
    if state_of(previous) != "running":
        _start(services, previous, actions)
    if record.get("phase") in NO_RETURN:
        _switch(services, record["service_uid"], previous.name, None, actions, quiet=True)
    return Outcome("failed", previous.name if state_of(previous) == "running" else None, actions)


def _app_versions(services, service_uid, containers):
    """Every app container of the service in ``containers`` (all versions, candidates too)."""
    apps = services.docker.app_containers(service_uid, containers)
    return apps + [c for c in containers if c.name.endswith(CANDIDATE_SUFFIX) and c not in apps]


def _switch(services, service_uid, name, port, actions, quiet=False):
    if getattr(type(services), "proxy", None) is None:
        return
    try:
        count = services.proxy.switch(service_uid, name, port)
    except AgentError as exc:
        if not quiet:
            raise
        actions.append(f"switching traffic back to {name} failed ({exc.message})")
        return
    if count:
        actions.append(f"{count} domain(s) point to {name}")


def _remove(services, container, actions):
    services.docker.mark_expected(container.id)
    try:
        with translate(f"remove {container.name}"):
            if state_of(container) == "running":
                container.stop(timeout=STOP_GRACE)
            container.remove(force=True)
    except AgentError as exc:
        if exc.code != "not_found":
            raise
    actions.append(f"removed {container.name}")


def _start(services, container, actions):
    with translate(f"start {container.name}"):
        container.start()
        deadline = time.monotonic() + START_WAIT
        container.reload()
        while state_of(container) != "running" and time.monotonic() < deadline:
            gevent.sleep(0.5)
            container.reload()
    services.docker.clear_expected(container.id)
    if state_of(container) == "running":
        actions.append(f"started {container.name} again")
    else:
        actions.append(f"{container.name} did not start again")


def complete_history(history, record):
    """A deploy finished by recovery gets the build-history entry and build plan the
    pipeline would have written after the swap."""
    entry, plan = record.get("history"), record.get("plan")
    if isinstance(entry, dict):
        history.record(record["service_uid"], dict(entry, deployed_at=rfc3339(precision="s")))
    if isinstance(plan, dict):
        history.save_plan(record["service_uid"], plan)
