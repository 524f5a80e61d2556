"""Container monitoring (docs/commands.md, "Monitoring"): sampling loop, health checks, alerts.

Every ``interval`` seconds the loop samples the managed containers (Docker stats), probes
app containers with ``GET /`` on their ``pulseup-net`` address, and evaluates the alert
rules (:mod:`agent.services.monitoring_rules`). Queries read the latest snapshot and never
wait on sampling: the lock only guards in-memory swaps, and events are emitted after it is
released, so a listener may call back into this service. Rules (and each alert's last
firing time, for the cooldown) persist in ``STATE_DIR/monitoring.json`` (docs/design.md, "Settings and files").
"""

import collections
import json
import os
import time

import gevent
import gevent.lock
import gevent.pool
from marshmallow import ValidationError

from agent import log
from agent.errors import AgentError
from agent.fsutil import atomic_write
from agent.services.app import stats as docker_stats
from agent.services.docker import COMPONENT, NETWORK, is_app_candidate, is_database, labels_of
from agent.values import rfc3339
from agent.services.monitoring_rules import AlertRuleSchema, Evaluator, applies, default_rules, metric_values

STATE_FILE = "monitoring.json"
_log = log.get("monitoring")


class MonitoringService:
    def __init__(self, services, interval=30.0, cooldown=300.0, health_timeout=5.0,
                 history=500, concurrency=4):
        self.services = services
        self.interval, self.health_timeout, self.concurrency = interval, health_timeout, concurrency
        self.path = os.path.join(services.cfg.state_dir, STATE_FILE)
        self._lock = gevent.lock.Semaphore()
        self.evaluator = Evaluator(cooldown)
        self.history = collections.deque(maxlen=history)
        self.rules = []
        self.latest, self._previous = {}, {}
        self.metrics_errors = self.health_check_errors = 0
        self.last_collection = None
        self._greenlet, self._started = None, None
        self._load()

    # -- commands ---------------------------------------------------------------------

    @property
    def running(self):
        return self._greenlet is not None and not self._greenlet.dead

    def start(self):
        """Start the loop (idempotent); installs the default rules when none exist.
        Raises failed_precondition when the defaults cannot be saved."""
        if self.running:
            return {"message": "monitoring already started", "changed": False}
        if not self.rules:
            self.setup_rules(default_rules())
        self._started = time.monotonic()
        self._greenlet = self.services.spawn("monitoring", self._loop)
        return {"message": "monitoring started successfully", "changed": True}

    def stop(self):
        if not self.running:
            return {"message": "monitoring not running", "changed": False}
        greenlet, self._greenlet = self._greenlet, None
        greenlet.kill(block=True, timeout=10)
        self._started = None
        return {"message": "monitoring stopped successfully", "changed": True}

    def close(self):
        self.stop()

    def setup_rules(self, rules):
        """Replace the rule set (already validated AlertRule dicts) and persist it."""
        with self._lock:
            self.rules = [dict(rule) for rule in rules]
            self.evaluator.forget(keep_rule_ids={rule["id"] for rule in self.rules})
        self._save()
        return {"message": "alerts configured successfully", "rule_count": len(rules)}

    def status(self):
        uptime = int((time.monotonic() - self._started) * 1e9) if self.running and self._started else 0
        with self._lock:
            reply = {
                "enabled": self.running,
                "active_containers": sum(1 for m in self.latest.values() if m.get("state") == "running"),
                "total_alerts": len(self.history), "active_alerts": self.evaluator.active(),
                "last_metrics_collection": self.last_collection,
                "metrics_errors": self.metrics_errors, "health_check_errors": self.health_check_errors,
                "uptime": uptime, "uptime_seconds": uptime / 1e9,
            }
        figures = self.services.status() if self.services.status else None
        figures = figures or {}
        reply.update({key: figures.get(key) for key in ("connection", "outbox_queued", "outbox_dropped")})
        return reply

    def container_metrics(self):
        with self._lock:
            return dict(self.latest)

    # -- the loop ---------------------------------------------------------------------

    def _loop(self):
        while True:
            try:
                self.collect_once()
            except AgentError as exc:
                self.metrics_errors += 1
                _log.warning("metrics collection failed: %s", exc.message)
            gevent.sleep(self.interval)

    def collect_once(self, now=None):
        """One round: sample every managed container, evaluate the rules, emit alerts."""
        import psutil

        containers = self.services.docker.managed_containers()
        pool = gevent.pool.Pool(self.concurrency)
        samples = [s for s in pool.imap_unordered(self._sample, containers) if s is not None]
        disk = psutil.disk_usage("/").percent
        now = time.time() if now is None else now
        with self._lock:
            alerts = self._evaluate(samples, disk, now)
            self.latest = {metrics["container_id"]: metrics for metrics, _ in samples}
            self.last_collection = rfc3339(now)
        self._publish(alerts)

    def _sample(self, container):
        try:
            if container.attrs.get("State", {}).get("Running"):
                metrics = docker_stats.sample(self.services.docker, container)
            else:
                metrics = docker_stats.metrics(container.attrs, {})
        except AgentError as exc:
            self.metrics_errors += 1
            _log.warning("stats of %s failed: %s", container.name, exc.message)
            return None
        probe = self._health_check(container, metrics)
        if probe is not None:
            metrics["response_time"] = probe
        return metrics, container

    def _health_check(self, container, metrics):
        """GET / on the container's pulseup-net address (app containers with a port)."""
        address = _probe_address(container)
        if address is None or metrics.get("state") != "running":
            return None
        import requests

        url = f"http://{address}/"
        result = {"url": url, "success": False, "last_checked": rfc3339()}
        started = time.monotonic()
        try:
            with requests.Session() as session:
                session.trust_env = False  # never through a proxy from the environment
                response = session.get(url, timeout=self.health_timeout, allow_redirects=False)
            result.update(status_code=response.status_code, success=response.status_code < 500)
        except requests.RequestException as exc:
            self.health_check_errors += 1
            result["error"] = f"{type(exc).__name__}: {exc}"[:512]
        elapsed = int((time.monotonic() - started) * 1e9)
        result.update(response_time=elapsed, response_time_seconds=elapsed / 1e9)
        return result

    def _evaluate(self, samples, disk, now):
        alerts = []
        for metrics, container in samples:
            cid, name = metrics["container_id"], metrics["container_name"]
            limit = (container.attrs.get("HostConfig") or {}).get("Memory") or 0
            values = metric_values(metrics, self._previous.get(cid), limit, disk)
            proxy = labels_of(container).get(COMPONENT) == "caddy"
            for rule in self.rules:
                if applies(rule, name, proxy):
                    fired = self.evaluator.evaluate(rule, cid, name, values[rule["metric_type"]], now)
                    alerts += [(rule, alert) for alert in fired]
        self._previous = {m["container_id"]: m for m, _ in samples}
        self.evaluator.forget(keep_container_ids=set(self._previous))
        for rule, alert in alerts:
            self.history.append(alert)
            if not alert["resolved"]:
                rule["last_triggered"] = alert["timestamp"]
        return alerts

    def _publish(self, alerts):
        """Emit outside the lock (an event listener may query this service)."""
        for rule, alert in alerts:
            notify = rule.get("notification_config") or {}
            if notify.get("log_event"):
                _log.warning("alert: %s", alert["message"])
            if not notify.get("websocket_event", True):
                continue
            self.services.events.emit("monitoring_alert", alert)
            if rule["metric_type"] == "container_down" and not alert["resolved"]:
                self.services.events.emit("container_stopped", {
                    "container_id": alert["container_id"], "container_name": alert["container_name"],
                    "timestamp": alert["timestamp"], "alert_id": alert["id"],
                    "severity": alert["severity"], "message": alert["message"]})
        if any(not alert["resolved"] for _, alert in alerts):
            self._save()

    # -- persistence ------------------------------------------------------------------

    def _load(self):
        try:
            with open(self.path, encoding="utf-8") as handle:
                state = json.load(handle)
            self.rules = [AlertRuleSchema().load(rule) for rule in state.get("rules", [])]
            self.evaluator.restore(state.get("cooldowns"))
        except FileNotFoundError:
            return
        except (OSError, ValueError, AttributeError, ValidationError) as exc:
            _log.warning("ignoring unreadable %s: %s", self.path, exc)

    def _save(self):
        with self._lock:
            state = {"version": 1, "rules": self.rules, "cooldowns": self.evaluator.cooldowns()}
        try:
            write_private_json(self.path, state)
        except OSError as exc:
            raise AgentError("failed_precondition",
                             f"cannot write {self.path}: {exc.strerror or exc}") from exc


def _probe_address(container):
    """``ip:port`` on pulseup-net for an app container with an exposed TCP port, else None."""
    if not is_app_candidate(container) or is_database(container):
        return None
    networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    address = (networks.get(NETWORK) or {}).get("IPAddress")
    exposed = (container.attrs.get("Config") or {}).get("ExposedPorts") or {}
    ports = sorted(int(p.split("/")[0]) for p in exposed if p.endswith("/tcp") and p.split("/")[0].isdigit())
    if not address or not ports:
        return None
    return f"{address}:{ports[0]}"


def write_private_json(path, data):
    """docs/commands.md, "Paths and files": mode 0600 in a 0700 directory created when missing, written atomically."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"))

