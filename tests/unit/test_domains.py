"""Domain validation (docs/commands.md, "Domains and the proxy") and the service.domain.manage request schema."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import AgentError
from agent.handlers import domains as handler
from agent.protocol.fields import load_request
from agent.services.caddy import domains as dom


@pytest.mark.parametrize("raw, expected", [
    ("Example.COM", "example.com"),
    ("  shop.example.com.  ", "shop.example.com"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("a-b.c1", "a-b.c1"),
    ("www." + "a" * 63 + ".io", "www." + "a" * 63 + ".io"),
])
def test_valid_domains_are_normalised(raw, expected):
    assert dom.normalize_domain(raw) == expected


@pytest.mark.parametrize("hostile", [
    "a.com\n}", "*.a.com", "1.2.3.4", "a.com:443", "a.com/path", "localhost", "", " ",
    "-a.com", "a-.com", "a..com", "a.com..", "a b.com", "a.com}", "a.com{", "[::1]",
    "ümlaut.de", "a.123", "a" * 64 + ".com", ("a" * 60 + ".") * 5 + "com", "a.com\x00",
    "a.com\"", "{http.request.host}.com",
])
def test_hostile_domains_are_refused(hostile):
    with pytest.raises(AgentError) as err:
        dom.normalize_domain(hostile)
    assert err.value.code == "invalid_argument"
    assert err.value.field == "domain"


def test_non_string_domain_is_refused():
    with pytest.raises(AgentError):
        dom.normalize_domain(42)


@given(st.text(max_size=80))
def test_accepted_names_contain_only_safe_characters(text):
    try:
        name = dom.normalize_domain(text)
    except AgentError:
        return
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-.")
    assert not name.split(".")[-1].isdigit()


@pytest.mark.parametrize("value, mode", [
    ("to_www", "to_www"), ("www", "to_www"), ("WWW", "to_www"), ("to_root", "to_root"),
    ("root", "to_root"), ("no_www", "to_root"), ("none", "none"), ("whatever", "none"),
    (None, "none"),
])
def test_redirect_modes(value, mode):
    assert dom.redirect_mode(value) == mode


def test_host_names_for_redirects():
    assert dom.host_names("example.com", "to_www") == ("www.example.com", "example.com")
    assert dom.host_names("www.example.com", "to_www") == ("www.example.com", "example.com")
    assert dom.host_names("www.example.com", "to_root") == ("example.com", "www.example.com")
    assert dom.host_names("shop.example.com", "none") == ("shop.example.com", None)


def test_www_redirect_needs_a_valid_apex():
    with pytest.raises(AgentError):  # "www.com" has apex "com": one label
        dom.host_names("www.com", "to_root")


@pytest.mark.parametrize("email", ["ops@example.com", "a.b+c@sub.example.org"])
def test_valid_emails(email):
    assert dom.validate_email(email) == email


@pytest.mark.parametrize("email", ["no-at.example.com", "a@b@c.com", "a b@c.com", "a@1.2.3.4",
                                   "@example.com", "a@example.com\n}", "x" * 65 + "@a.com"])
def test_invalid_emails(email):
    with pytest.raises(AgentError) as err:
        dom.validate_email(email)
    assert err.value.code == "invalid_argument"


def test_conflicting_host_names_are_found():
    records = [{"domain": "example.com", "redirect_www": "to_www", "service_uid": "a"}]
    clash = {"domain": "www.example.com", "redirect_www": "none", "service_uid": "b"}
    assert dom.find_conflict(records, clash) is records[0]
    other = {"domain": "shop.example.com", "redirect_www": "none", "service_uid": "b"}
    assert dom.find_conflict(records, other) is None


def test_store_round_trip_is_sorted_and_private(tmp_path):
    store = dom.DomainStore(str(tmp_path / "caddy" / "domains.v2.json"))
    assert store.load() == []
    store.save([{"domain": "b.com", "service_uid": "s", "port": 80},
                {"domain": "a.com", "service_uid": "s", "port": 81, "ssl_error": None}])
    loaded = store.load()
    assert [r["domain"] for r in loaded] == ["a.com", "b.com"]
    assert "ssl_error" not in loaded[0]
    assert (tmp_path / "caddy" / "domains.v2.json").stat().st_mode & 0o777 == 0o600


def test_store_refuses_garbage(tmp_path):
    path = tmp_path / "domains.v2.json"
    path.write_text("{not json")
    with pytest.raises(AgentError) as err:
        dom.DomainStore(str(path)).load()
    assert err.value.code == "failed_precondition"


# -- request schema ---------------------------------------------------------------

def _load(data):
    return load_request(handler.DomainManageSchema(), data)


def test_upsert_requires_a_port():
    with pytest.raises(AgentError) as err:
        _load({"action": "add", "service_uid": "svc", "domain": "a.com"})
    assert err.value.field == "port"


@pytest.mark.parametrize("port", ["8080", 8080.5, 0, 70000, True])
def test_port_must_be_a_json_integer_in_range(port):
    with pytest.raises(AgentError) as err:
        _load({"action": "add", "service_uid": "svc", "domain": "a.com", "port": port})
    assert err.value.code == "invalid_argument" and err.value.field == "port"


def test_status_and_remove_need_no_port():
    assert _load({"action": "status", "service_uid": "svc", "domain": "a.com"})["protocol"] == "http"
    assert _load({"Action": "remove", "service_uid": "svc", "domain": "a.com"})["action"] == "remove"


def test_bad_uid_and_protocol_are_refused():
    with pytest.raises(AgentError) as err:
        _load({"action": "status", "service_uid": "../x", "domain": "a.com"})
    assert err.value.field == "service_uid"
    assert err.value.message.endswith("must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    with pytest.raises(AgentError) as err:
        _load({"action": "add", "service_uid": "s", "domain": "a.com", "port": 1, "protocol": "ftp"})
    assert err.value.field == "protocol"


def test_actions_map_to_kinds_and_locks():
    for name in handler.UPSERT:
        assert handler._action({"action": name}) == "upsert"
    assert handler._action({"action": "remove_domain"}) == "remove"
    assert handler._action({"action": "domain_status"}) == "status"
    assert handler._action({"action": "explode"}) is None
    upsert = {"action": "add", "service_uid": "svc"}
    status = {"action": "status", "service_uid": "svc"}
    spec = _registered_spec()
    assert spec.operation_id(upsert) == "domain:svc"
    assert spec.lock_key(upsert) == "svc"
    assert spec.for_request(upsert) is spec
    assert spec.for_request(status) is None     # read-only: no operation, no lock


def _registered_spec():
    from agent.handlers.registry import Registry
    registry = Registry()
    handler.register(registry)
    return registry.get("service.domain.manage").operation
