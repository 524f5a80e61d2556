"""The proxy service: domain records, transactional applies, traffic switches, TLS status.

Every change runs as one transaction under the host-wide proxy lock (docs/commands.md, "Domains and the proxy"): read
``domains.v2.json``, change the records in memory, render the whole document, write it to a
temporary file, ``POST /load`` it through the admin socket, and only on HTTP 200 rename the
file to ``caddy.json``, refresh the proxy's boot document and commit the state file. Any
failure leaves the files untouched, and Caddy itself keeps serving its previous config when
it refuses a load (docs/hosts.md, "Caddy").
"""

import copy
import json
import os

import gevent
import gevent.lock

from agent import log
from agent.errors import AgentError
from agent.services.caddy import domains as dom
from agent.services.caddy.admin import AdminClient
from agent.services.caddy.container import ProxyContainer
from agent.services.caddy.document import build_document
from agent.services.caddy.tls import check_certificate
from agent.services.docker import COMPOSE_PROJECT, NETWORK, labels_of
from agent.values import rfc3339

TLS_CHECK_DELAYS = (30.0, 120.0, 600.0)  # docs/commands.md, "Domains and the proxy": +30 s, +2 min, +10 min
_APPLIED_KEYS = ("upstream_container", "port", "protocol", "force_https", "redirect_www",
                 "managed_certificate", "certificate_email")
_log = log.get("caddy")


class CaddyService:
    """Public methods raise AgentError: ``invalid_argument`` (bad domain or email),
    ``not_found`` (unknown domain, no active container), ``conflict`` (domain of another
    service), ``unavailable`` (Docker or the proxy unreachable), ``internal`` (Caddy refused
    the document, with its error text), ``failed_precondition`` (state unwritable)."""

    def __init__(self, cfg, docker, events, spawn=None, tls_check_delays=TLS_CHECK_DELAYS):
        self.cfg = cfg
        self.docker = docker
        self.events = events
        self._spawn = spawn or (lambda name, func, *args: gevent.spawn(func, *args))
        self.tls_check_delays = tuple(tls_check_delays)
        self.dir = os.path.join(cfg.state_dir, "caddy")
        self.store = dom.DomainStore(os.path.join(self.dir, "domains.v2.json"))
        self.container = ProxyContainer(cfg, docker, self.dir)
        self.admin = AdminClient(self.container.socket_path)
        self._lock = gevent.lock.RLock()
        self._checks = {}

    # -- commands ----------------------------------------------------------------------

    def upsert(self, service_uid, domain, port, protocol="http", managed_certificate=True,
               force_https=None, redirect_www="none", email=None):
        """Add or change a domain of a service and apply; returns its DomainInfo."""
        name = dom.normalize_domain(domain)
        redirect = dom.redirect_mode(redirect_www)
        dom.host_names(name, redirect)  # both www and apex names must be valid
        email = dom.validate_email(email) if email else dom.DEFAULT_EMAIL
        upstream = self.upstream_for(service_uid)
        wanted = {"domain": name, "service_uid": service_uid, "upstream_container": upstream,
                  "port": port, "protocol": protocol, "redirect_www": redirect,
                  "managed_certificate": bool(managed_certificate),
                  "force_https": bool(managed_certificate if force_https is None else force_https),
                  "certificate_email": email}

        def change(records):
            old = _find(records, name)
            if old is not None and old["service_uid"] != service_uid:
                raise AgentError("conflict", f"domain {name} is bound to another service")
            other = dom.find_conflict(records, wanted)
            if other is not None:
                raise AgentError("conflict", f"a host name of {name} is already served for "
                                 f"domain {other['domain']}")
            record = dict(old or {}, **wanted)
            record["ssl_status"] = _initial_ssl_status(old, record)
            return [r for r in records if r["domain"] != name] + [record]

        records = self._transaction(change, [name])
        return info(_find(records, name))

    def remove(self, service_uid, domain):
        """Remove one domain of a service and apply."""
        name = dom.normalize_domain(domain)

        def change(records):
            old = _find(records, name)
            if old is None or old["service_uid"] != service_uid:
                raise AgentError("not_found", "domain not found")
            return [r for r in records if r["domain"] != name]

        self._transaction(change, [name])
        self._cancel_check(name)
        return name

    def status(self, service_uid, domain):
        """The DomainInfo of one domain; a managed domain gets a fresh TLS check."""
        name = dom.normalize_domain(domain)
        record = _find(self.store.load(), name)
        if record is None or record["service_uid"] != service_uid:
            raise AgentError("not_found", "domain not found")
        if record.get("managed_certificate"):
            record = self.check_tls(name) or record
        return info(record)

    def domains_of(self, service_uid):
        """The service's domain records (DomainInfo shape)."""
        return [info(r) for r in self.store.load() if r["service_uid"] == service_uid]

    # -- used by the deploy pipeline and service.delete -------------------------------

    def switch(self, service_uid, container_name, port=None):
        """Re-point every domain of the service to ``container_name:port`` on pulseup-net
        (the new container, before the old one is stopped). Returns the number of domains;
        0 at once when the service has none. A failed load keeps the previous config."""
        if not any(r["service_uid"] == service_uid for r in self.store.load()):
            return 0

        def change(records):
            for record in records:
                if record["service_uid"] == service_uid:
                    record["upstream_container"] = container_name
                    if port:
                        record["port"] = int(port)
            return records

        mine = [r["domain"] for r in self.store.load() if r["service_uid"] == service_uid]
        self._transaction(change, mine)
        return len(mine)

    def remove_service(self, service_uid):
        """Remove every domain of the service (service.delete); returns how many."""
        mine = [r["domain"] for r in self.store.load() if r["service_uid"] == service_uid]
        if not mine:
            return 0
        self._transaction(lambda records: [r for r in records if r["domain"] not in mine], mine)
        for name in mine:
            self._cancel_check(name)
        return len(mine)

    def on_service_delete(self, service_uid, options):
        """service.delete takes part here: the service's domains leave the proxy."""
        domains = [r["domain"] for r in self.store.load() if r["service_uid"] == service_uid]
        self.remove_service(service_uid)
        return {"domains_removed": domains}

    def reapply(self):
        """Start-up (docs/commands.md, "Domains and the proxy"): ensure the proxy and load the stored config, when
        there are domains or a proxy container already exists."""
        with self._lock:
            records = self.store.load()
            if not records and self.docker.proxy_container() is None:
                return False
            self._apply(records, records)
            return True

    def upstream_for(self, service_uid):
        """Name (or compose alias) of the service's active app container; not_found if none."""
        containers = self.docker.find_service_containers(service_uid)
        active = self.docker.active_container(service_uid, containers)
        if active is None:
            raise AgentError("not_found", f"service {service_uid} has no active app container; "
                             "deploy it before adding a domain")
        if COMPOSE_PROJECT in labels_of(active):
            for container in containers:
                alias = _compose_alias(container)
                if alias:
                    return alias
        return active.name

    # -- transactions ------------------------------------------------------------------

    def _transaction(self, change, names):
        with self._lock:
            previous = self.store.load()
            records = change(copy.deepcopy(previous))
            now = rfc3339()
            before = {r["domain"]: r for r in previous}
            for record in records:
                old = before.get(record["domain"])
                if old is None or any(old.get(k) != record.get(k) for k in _APPLIED_KEYS):
                    record["last_applied"] = now
            try:
                self._apply(records, previous)
            except AgentError as exc:
                for name in names:
                    old = before.get(name)
                    if old is not None:
                        self._emit(old, error=exc.message)
                raise
        for name in names:
            record = _find(records, name)
            if record is not None:
                self._emit(record)
                if record.get("managed_certificate") and record.get("ssl_status") != "active":
                    self._schedule_check(name)
        return records

    def _render(self, records):
        return build_document(records, self.cfg.caddy_tls_issuer, self.cfg.caddy_https_port,
                              self.cfg.caddy_http_port)

    def _apply(self, records, previous):
        boot = self.container.boot_config_path
        if not os.path.exists(boot):
            # the proxy boots from the last committed document (a restart keeps the routes)
            self.container.prepare_dirs()
            dom.write_atomic(boot, _encode(self._render(previous)))
        self.container.ensure()
        document = self._render(records)
        self.admin.load(document)
        try:
            data = _encode(document)
            dom.write_atomic(os.path.join(self.dir, "caddy.json"), data)
            dom.write_atomic(boot, data)
            self.store.save(records)
        except AgentError:
            # state could not be committed: put the previous document back in the proxy
            self._restore(previous)
            raise

    def _restore(self, previous):
        try:
            self.admin.load(self._render(previous))
        except AgentError as exc:
            _log.error("could not restore the previous proxy config: %s", exc.message)

    # -- TLS status --------------------------------------------------------------------

    def check_tls(self, name):
        """Handshake check of one managed domain (docs/commands.md, "Domains and the proxy"); records and emits a
        change of ``ssl_status``. Returns the updated record, or None if it is gone."""
        record = _find(self.store.load(), name)
        if record is None or not record.get("managed_certificate"):
            return record
        host = dom.host_names(name, record["redirect_www"])[0]
        status, error = check_certificate(host, self.cfg.caddy_https_port,
                                          self.cfg.caddy_tls_issuer,
                                          os.path.join(self.dir, "data"))
        with self._lock:
            records = self.store.load()
            record = _find(records, name)
            if record is None:
                return None
            changed = record.get("ssl_status") != status
            record.update(ssl_status=status, last_checked=rfc3339())
            record.pop("ssl_error", None)
            if error:
                record["ssl_error"] = error
            self.store.save(records)
        if changed:
            self._emit(record)
        return record

    def _schedule_check(self, name):
        self._cancel_check(name)
        self._checks[name] = self._spawn(f"tls-check {name}", self._check_loop, name)

    def _cancel_check(self, name):
        greenlet = self._checks.pop(name, None)
        if greenlet is not None and greenlet is not gevent.getcurrent():
            greenlet.kill(block=False)

    def _check_loop(self, name):
        for delay in self.tls_check_delays:
            gevent.sleep(delay)
            try:
                record = self.check_tls(name)
            except AgentError as exc:
                _log.warning("TLS check of %s failed: %s", name, exc.message)
                continue
            if record is None or record.get("ssl_status") == "active":
                break
        self._checks.pop(name, None)

    def _emit(self, record, error=None):
        data = {"service_uid": record["service_uid"], "domain": record["domain"],
                "ssl_status": record.get("ssl_status", "pending"),
                "upstream_container": record.get("upstream_container"),
                "last_applied": record.get("last_applied")}
        for key in ("last_checked", "ssl_error"):
            if record.get(key):
                data["checked_at" if key == "last_checked" else key] = record[key]
        if error:
            data["error"] = error
        self.events.emit("domain_status_update", data)

    def close(self):
        for name in list(self._checks):
            self._cancel_check(name)


def _encode(document):
    return json.dumps(document, indent=1, sort_keys=True).encode()


def _find(records, name):
    return next((r for r in records if r["domain"] == name), None)


def _initial_ssl_status(old, record):
    if not record["managed_certificate"]:
        return "disabled"
    same_hosts = old is not None and old.get("redirect_www") == record["redirect_www"]
    if same_hosts and old.get("managed_certificate") and old.get("ssl_status") == "active":
        return "active"
    return "pending"


def _compose_alias(container):
    """``<project>-<service>`` when the container carries that alias on pulseup-net."""
    labels = labels_of(container)
    project, service = labels.get(COMPOSE_PROJECT), labels.get("com.docker.compose.service")
    networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    aliases = (networks.get(NETWORK) or {}).get("Aliases") or []
    alias = f"{project}-{service}"
    return alias if project and service and alias in aliases else None


def info(record):
    """DomainInfo (docs/commands.md, "Shapes") of a record; ``ssl`` mirrors managed_certificate."""
    data = {key: record.get(key) for key in dom.RECORD_KEYS}
    data["ssl"] = bool(record.get("managed_certificate"))
    data["ssl_status"] = data["ssl_status"] or "pending"
    for optional in ("ssl_error", "last_checked"):
        if data[optional] is None:
            del data[optional]
    return data
