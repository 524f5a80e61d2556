"""Hypothesis fuzzing of every registered command's request schema (docs/design.md, "Test sizes": about 500
cases per schema under the ``ci`` profile): any JSON value -> ``load_request`` returns the
request or raises AgentError(invalid_argument), never another exception.

Each Hypothesis example is a batch of ``BATCH`` requests: generation overhead, not the schema,
dominates the cost of one example, and 36 schemas x 500 single examples would take minutes.
``max_examples`` of the active profile / BATCH examples = about max_examples cases per schema.
"""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from agent.errors import AgentError
from agent.handlers import build_registry
from agent.protocol.fields import load_request

BATCH = 10
REGISTRY = build_registry()
COMMANDS = [name for name in REGISTRY.names() if REGISTRY.get(name).schema is not None]

# Mostly scalars with a little nesting: generation cost grows with every draw (ENVIRONMENT:
# 2 cores), and the schemas' own nesting is reached through the keys below.
scalars = (st.none() | st.booleans() | st.integers() | st.sampled_from([2**64, -2**70, 10**30])
           | st.floats() | st.text(st.characters(max_codepoint=0x2ff), max_size=20)
           | st.sampled_from(["", "a", "svc-1", "-x", "../x", "a" * 300, "é\u0000"]))
json_values = scalars | st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                                     | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=4)


def field_keys(schema):
    """The schema's wire keys, plus letter-case variants (docs/commands.md, "Requests") and nested keys."""
    keys = set()
    for name, field in schema.fields.items():
        key = field.data_key or name
        keys |= {key, key.upper(), key.title()}
        nested = getattr(field, "schema", None)
        if nested is not None and hasattr(nested, "fields"):
            keys |= set(field_keys(nested))
    return sorted(keys)


def requests_for(schema):
    known = field_keys(schema)
    keys = (st.sampled_from(known) | st.text(max_size=8)) if known else st.text(max_size=8)
    objects = st.dictionaries(keys, json_values, max_size=6)
    return objects | json_values


def test_every_handler_module_is_fuzzed():
    assert len(COMMANDS) >= 10, COMMANDS          # the registry really was built


@pytest.mark.parametrize("command", COMMANDS)
def test_schema_returns_or_refuses_with_invalid_argument(command):
    schema = REGISTRY.get(command).schema

    examples = max(1, settings.default.max_examples // BATCH)

    @settings(suppress_health_check=[HealthCheck.too_slow], derandomize=True, max_examples=examples)
    @given(st.lists(requests_for(schema), min_size=BATCH, max_size=BATCH))
    def check(batch):
        for data in batch:
            try:
                request = load_request(schema, data)
            except AgentError as exc:
                assert exc.code == "invalid_argument", (exc.code, exc.message)
                assert isinstance(exc.message, str) and exc.message
            else:
                assert isinstance(request, dict)
    check()
