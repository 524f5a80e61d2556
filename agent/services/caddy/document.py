"""The complete Caddy JSON document rendered from the domain records (docs/commands.md, "Domains and the proxy").

Pure data: no text templating, no Caddyfile, no free-form directives. Every host name in it
has passed :func:`agent.services.caddy.domains.normalize_domain`, and every other value is
an int, a bool or one of a few fixed words, so a record cannot inject configuration.

Layout:
- ``admin``: the Unix socket inside the proxy's ``/run/caddy`` (never TCP), no autosave
  (docs/commands.md, "Domains and the proxy": the agent re-applies its own state).
- ``pulseup_https`` (:443): one route per managed domain.
- ``pulseup_http`` (:80): HTTP->HTTPS redirects of ``force_https`` domains, routes of the
  other domains, then a terminal 404 for unknown hosts (docs/hosts.md, "Caddy": a Host
  matching no route otherwise gets an empty 200).
- ``tls.automation.policies``: one per managed domain, with its own ACME email, or Caddy's
  internal CA when ``CADDY_TLS_ISSUER=internal``.
"""

from agent.services.caddy.domains import host_names

ADMIN_SOCKET_IN_CONTAINER = "/run/caddy/admin.sock"
HTTPS_SERVER = "pulseup_https"
HTTP_SERVER = "pulseup_http"


def not_found_route():
    return {"handle": [{"handler": "static_response", "status_code": 404,
                        "body": "no site is configured for this host\n"}],
            "terminal": True}


def _redirect(location, status=301):
    return {"handler": "static_response", "status_code": status,
            "headers": {"Location": [location]}}


def _proxy_handlers(record):
    proxy = {"handler": "reverse_proxy",
             "upstreams": [{"dial": f"{record['upstream_container']}:{int(record['port'])}"}]}
    if record.get("protocol") == "https":
        # the hop stays inside pulseup-net: the app's own certificate is not verified
        proxy["transport"] = {"protocol": "http", "tls": {"insecure_skip_verify": True}}
    return [{"handler": "encode", "encodings": {"gzip": {}}}, proxy]


def site_route(record, scheme, port_suffix=""):
    """The route serving one domain: www/apex redirect first, then encode + reverse_proxy."""
    canonical, alias = host_names(record["domain"], record["redirect_www"])
    inner = []
    if alias:
        target = f"{scheme}://{canonical}{port_suffix}{{http.request.uri}}"
        inner.append({"match": [{"host": [alias]}], "handle": [_redirect(target)],
                      "terminal": True})
    inner.append({"handle": _proxy_handlers(record)})
    hosts = [canonical] + ([alias] if alias else [])
    return {"match": [{"host": hosts}],
            "handle": [{"handler": "subroute", "routes": inner}], "terminal": True}


def https_redirect_route(record, https_port):
    """HTTP -> HTTPS for a force_https domain (permanent, keeping the URI); an alias host is
    sent straight to the canonical host."""
    canonical, alias = host_names(record["domain"], record["redirect_www"])
    suffix = "" if https_port == 443 else f":{https_port}"
    hosts = [canonical] + ([alias] if alias else [])
    return {"match": [{"host": hosts}],
            "handle": [_redirect(f"https://{canonical}{suffix}{{http.request.uri}}", 308)],
            "terminal": True}


def tls_policy(record, issuer):
    canonical, alias = host_names(record["domain"], record["redirect_www"])
    if issuer == "internal":
        issuers = [{"module": "internal"}]
    else:
        issuers = [{"module": "acme", "email": record["certificate_email"]}]
    return {"subjects": [canonical] + ([alias] if alias else []), "issuers": issuers}


def build_document(records, issuer="acme", https_port=443, http_port=80):
    """The whole JSON document for ``POST /load``.

    ``https_port``/``http_port`` are the host ports published for the proxy; they only
    appear in redirect locations (Caddy itself listens on 80/443 inside its container).
    """
    records = sorted(records, key=lambda r: r["domain"])
    managed = [r for r in records if r.get("managed_certificate")]
    https_suffix = "" if https_port == 443 else f":{https_port}"
    http_suffix = "" if http_port == 80 else f":{http_port}"
    https_routes = [site_route(r, "https", https_suffix) for r in managed]
    http_routes = []
    for record in records:
        # force_https is treated as false without a managed certificate (docs/commands.md, "Domains and the proxy")
        if record.get("managed_certificate") and record.get("force_https"):
            http_routes.append(https_redirect_route(record, https_port))
        else:
            http_routes.append(site_route(record, "http", http_suffix))
    http_routes.append(not_found_route())
    https_routes.append(not_found_route())
    return {
        "admin": {"listen": "unix/" + ADMIN_SOCKET_IN_CONTAINER, "config": {"persist": False}},
        "apps": {
            "http": {"http_port": 80, "https_port": 443, "servers": {
                HTTPS_SERVER: {"listen": [":443"], "routes": https_routes,
                               "automatic_https": {"disable_redirects": True}},
                HTTP_SERVER: {"listen": [":80"], "routes": http_routes},
            }},
            "tls": {"automation": {"policies": [tls_policy(r, issuer) for r in managed]}},
            # never try to install Caddy's local root into a trust store (docs/hosts.md, "Caddy")
            "pki": {"certificate_authorities": {"local": {"install_trust": False}}},
        },
    }
