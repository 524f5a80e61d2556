"""Every validated field refuses a trailing newline (issue 17 item 6, docs/security.md).

`re.match` with a pattern ending in `$` accepts "abc\\n": the fields are enumerated from the
registry's schemas (and the supervisor's op schemas), so a new validated field without a
sample here fails the test instead of going unchecked.
"""
import re

import marshmallow
import pytest

from agent.errors import AgentError
from agent.handlers import build_registry
from agent.protocol.fields import FullMatch, load_request
from agent.services.caddy import domains
from agent.services.database.engines import DATABASE_RE, USERNAME_RE, quote
from agent.services.docker import CONTAINER_REF
from agent.services import git
from agent.supervisor.ops import OPS

# a valid value per validated field name; each gets "\n" appended
SAMPLES = {
    "service_uid": "svc-1", "deployment_uid": "dep-1", "backup_uid": "bk-1", "github_branch": "main",
    "commit_sha": "abcdef1", "last_commit_sha": "abcdef1", "target_version": "abcdef1",
    "access_token": "tok-123", "github_repo": "octo/app", "health_check_path": "/health",
    "dockerfile_path": "Dockerfile", "base_directory": "app", "docker_compose_path": "compose.yml",
    "docker_compose_service_mode": "all", "docker_compose_project_name": "proj",
    "database": "appdb", "username": "app", "password": "pw-secret", "type": "postgresql",
    "version": "1.2.3", "file_name": "pulseup-agent_1.2.3_all.deb", "fingerprint": "SHA256:" + "A" * 43,
    "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPi1hg3qMTsmo4ghNKvIkDLBgCQQG+v0Hbo0T7eyKwAT", "comment": "me@laptop", "user": "deploy",
    "container_id": "abcdef123456", "domain": "example.com", "email": "admin@example.com",
    "redirect_www": "to_www", "action": "add", "cron_expression": "@daily", "timezone": "UTC",
    "storage_path": "/var/backups/x", "backup_path": "/var/backups/x/backup.dump.zst",
    "command_id": "disk_usage",
}
# required fields that are not under test: a valid value to complete the request
FILLERS = {"type": "postgresql", "password": "pw-secret", "action": "add", "domain": "example.com",
           "user": "deploy", "public_key": SAMPLES["public_key"], "storage_path": "/var/backups/x",
           "auto_updates_enabled": True, "threshold": 1.0, "version": "1.2.3",
           "file_name": SAMPLES["file_name"]}
# what a schema's cross-field rules need besides its required fields; of each group of
# alternatives, only the field under test (or the first) is sent
EXTRAS = {"backup_uid": "bk-1", "fingerprint": SAMPLES["fingerprint"], "port": 8080}
ALTERNATIVES = ({"backup_uid", "backup_path"}, {"fingerprint", "public_key"})
# parsed into numbers (the text never travels on): surrounding whitespace is tolerated
NUMERIC_PARSERS = {"Since", "MemoryLimit", "CpuLimit"}


def _validated(field):
    """A text field with a pattern, a checking function or a checking type."""
    if type(field).__name__ in NUMERIC_PARSERS:
        return False
    if type(field).__name__ in ("Branch", "Sha"):
        return True
    return isinstance(field, marshmallow.fields.String) and any(
        isinstance(v, marshmallow.validate.Regexp) or not isinstance(v, marshmallow.validate.Validator)
        for v in field.validators)


def _fields(schema, prefix=""):
    for name, field in schema.fields.items():
        key = field.data_key or name
        if isinstance(field, marshmallow.fields.Nested) and not field.many:
            yield from _fields(field.schema, f"{prefix}{key}.")
        elif _validated(field):
            yield prefix + key, schema


def _cases():
    cases = [(f"command {name}", command.schema, path)
             for name in build_registry().names() if (command := build_registry().get(name)).schema is not None
             for path, _ in _fields(command.schema)]
    cases += [(f"supervisor op {name}", op.schema(), path) for name, op in OPS.items()
              for path, _ in _fields(op.schema())]
    return cases


CASES = _cases()


def _request(schema, path, value):
    data = {}
    for name, field in schema.fields.items():
        key = field.data_key or name
        if field.required:
            data[key] = FILLERS.get(key, SAMPLES.get(key))
        elif key in EXTRAS:
            data[key] = EXTRAS[key]
    for group in ALTERNATIVES:
        if path in group:
            for other in group - {path}:
                if other in schema.fields and not schema.fields[other].required:
                    data.pop(other, None)
    head, _, tail = path.partition(".")
    if tail:
        data[head] = {tail: value}
    else:
        data[head] = value
    return data


def test_the_enumeration_finds_the_known_fields():
    paths = {path for _, _, path in CASES}
    assert {"service_uid", "deployment_uid", "github_branch", "commit_sha", "username", "user",
            "fingerprint", "service.health_check_path", "domain", "github_repo", "timezone"} <= paths
    assert len(CASES) > 60


@pytest.mark.parametrize("where,schema,path", CASES, ids=[f"{w}:{p}" for w, _, p in CASES])
def test_a_trailing_newline_is_refused(where, schema, path):
    name = path.rpartition(".")[2]
    assert name in SAMPLES, f"{where}: add a valid sample for {name}"
    load_request(schema, _request(schema, path, SAMPLES[name]))     # the sample itself is valid
    with pytest.raises(AgentError) as info:
        load_request(schema, _request(schema, path, SAMPLES[name] + "\n"))
    assert info.value.code == "invalid_argument"
    assert info.value.field in (path, name), (info.value.field, info.value.message)


@pytest.mark.parametrize("check,value", [
    (lambda v: git.normalize_repo_url(v, ("github.com",)), "octo/app"),
    (lambda v: git.normalize_repo_url(v, ("github.com",)), "https://github.com/octo/app.git"),
    (git.validate_branch, "main"),
    (git.validate_sha, "abcdef1"),
    (domains.normalize_domain, "example.com"),
    (domains.validate_email, "admin@example.com"),
])
def test_service_validators_refuse_a_trailing_newline(check, value):
    check(value)
    with pytest.raises(AgentError) as info:
        check(value + "\n")
    assert info.value.code == "invalid_argument"


@pytest.mark.parametrize("pattern,value", [(DATABASE_RE, "appdb"), (USERNAME_RE, "app"),
                                           (CONTAINER_REF, "web-1")])
def test_patterns_used_with_match_are_anchored_at_the_very_end(pattern, value):
    assert pattern.match(value) and not pattern.match(value + "\n")


def test_full_match_refuses_a_suffix():
    validator = FullMatch(re.compile(r"[a-z]+"))
    assert validator("abc") == "abc"
    for bad in ("abc\n", "abc1", "1abc"):
        with pytest.raises(marshmallow.ValidationError):
            validator(bad)


@pytest.mark.parametrize("value", ["plain", "it's", "a b; rm -rf /", "$(id)", "`id`", "x\ny", ""])
def test_shell_quoting_round_trips(value):
    import subprocess
    out = subprocess.run(["sh", "-c", f"printf '%s' {quote(value)}"], capture_output=True, text=True, check=True)
    assert out.stdout == value
