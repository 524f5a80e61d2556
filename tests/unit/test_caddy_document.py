"""The Caddy JSON document rendered from domain records (docs/commands.md, "Domains and the proxy")."""

from agent.services.caddy.document import build_document


def record(domain, **extra):
    base = {"domain": domain, "service_uid": "svc", "upstream_container": "pulseup-app-svc-v0001",
            "port": 8080, "protocol": "http", "redirect_www": "none", "managed_certificate": True,
            "force_https": True, "certificate_email": "ops@example.com"}
    base.update(extra)
    return base


def servers(doc):
    return doc["apps"]["http"]["servers"]


def hosts(route):
    return route["match"][0]["host"] if "match" in route else None


def handlers(route):
    return [h["handler"] for h in route["handle"][0]["routes"][-1]["handle"]]


def test_empty_document_has_admin_socket_and_404_fallbacks():
    doc = build_document([])
    assert doc["admin"] == {"listen": "unix//run/caddy/admin.sock", "config": {"persist": False}}
    for name in ("pulseup_http", "pulseup_https"):
        routes = servers(doc)[name]["routes"]
        assert len(routes) == 1 and "match" not in routes[0]
        assert routes[0]["handle"][0]["status_code"] == 404 and routes[0]["terminal"]
    assert servers(doc)["pulseup_https"]["automatic_https"] == {"disable_redirects": True}
    assert doc["apps"]["pki"]["certificate_authorities"]["local"]["install_trust"] is False


def test_managed_domain_with_force_https():
    doc = build_document([record("example.com")], issuer="acme")
    https, http = servers(doc)["pulseup_https"]["routes"], servers(doc)["pulseup_http"]["routes"]
    assert hosts(https[0]) == ["example.com"]
    assert handlers(https[0]) == ["encode", "reverse_proxy"]
    proxy = https[0]["handle"][0]["routes"][-1]["handle"][1]
    assert proxy["upstreams"] == [{"dial": "pulseup-app-svc-v0001:8080"}]
    assert "transport" not in proxy
    redirect = http[0]["handle"][0]
    assert redirect["status_code"] == 308
    assert redirect["headers"]["Location"] == ["https://example.com{http.request.uri}"]
    policy = doc["apps"]["tls"]["automation"]["policies"]
    assert policy == [{"subjects": ["example.com"],
                       "issuers": [{"module": "acme", "email": "ops@example.com"}]}]


def test_internal_issuer_and_non_default_https_port_in_redirect():
    doc = build_document([record("example.com")], issuer="internal", https_port=8443)
    assert doc["apps"]["tls"]["automation"]["policies"][0]["issuers"] == [{"module": "internal"}]
    location = servers(doc)["pulseup_http"]["routes"][0]["handle"][0]["headers"]["Location"]
    assert location == ["https://example.com:8443{http.request.uri}"]


def test_unmanaged_domain_is_served_on_http_only_and_never_forced():
    doc = build_document([record("plain.example.com", managed_certificate=False, force_https=True)])
    assert len(servers(doc)["pulseup_https"]["routes"]) == 1  # only the fallback
    route = servers(doc)["pulseup_http"]["routes"][0]
    assert hosts(route) == ["plain.example.com"]
    assert handlers(route) == ["encode", "reverse_proxy"]
    assert doc["apps"]["tls"]["automation"]["policies"] == []


def test_managed_without_force_https_is_served_on_both():
    doc = build_document([record("example.com", force_https=False)])
    assert handlers(servers(doc)["pulseup_http"]["routes"][0]) == ["encode", "reverse_proxy"]
    assert handlers(servers(doc)["pulseup_https"]["routes"][0]) == ["encode", "reverse_proxy"]


def test_www_redirect_goes_first_and_covers_both_names():
    doc = build_document([record("example.com", redirect_www="to_www")])
    route = servers(doc)["pulseup_https"]["routes"][0]
    assert hosts(route) == ["www.example.com", "example.com"]
    first = route["handle"][0]["routes"][0]
    assert first["match"] == [{"host": ["example.com"]}]
    assert first["handle"][0]["status_code"] == 301
    assert first["handle"][0]["headers"]["Location"] == ["https://www.example.com{http.request.uri}"]
    subjects = doc["apps"]["tls"]["automation"]["policies"][0]["subjects"]
    assert subjects == ["www.example.com", "example.com"]


def test_https_upstream_skips_verification_inside_the_network():
    doc = build_document([record("example.com", protocol="https", port=8443)])
    proxy = servers(doc)["pulseup_https"]["routes"][0]["handle"][0]["routes"][-1]["handle"][1]
    assert proxy["transport"] == {"protocol": "http", "tls": {"insecure_skip_verify": True}}
    assert proxy["upstreams"] == [{"dial": "pulseup-app-svc-v0001:8443"}]


def test_routes_are_sorted_and_fallback_is_last():
    doc = build_document([record("b.example.com"), record("a.example.com")])
    routes = servers(doc)["pulseup_https"]["routes"]
    assert [hosts(r) for r in routes] == [["a.example.com"], ["b.example.com"], None]
