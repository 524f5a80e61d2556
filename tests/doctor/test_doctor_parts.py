"""The doctor's pure parts: the read-only outbox replay on hostile input, and the renderings."""

import json

from agent.doctor.report import failed, passed, render_json, render_text, run_checks, skipped
from agent.doctor.storage import backlog


def test_backlog_survives_hostile_journal_lines(tmp_path):
    journal = tmp_path / "outbox.journal"
    journal.write_bytes(b'{"+": 1, "f": "abc"}\n[1, 2]\n{"+": [1]}\n{"-": {"x": 1}}\n"text"\n\xff\xfe\n'
                        b'{"+": 2, "f": "de"}\n{"-": 1}\n{"+": 3, "f": "x"')
    assert backlog(str(journal)) == (1, 2, 4)


def test_text_and_json_renderings():
    results = [passed("config", "loaded"), failed("docker", "unreachable", "start dockerd"),
               skipped("caddy", "Docker is not reachable (see docker)")]
    text = render_text(results)
    assert "ok    config  loaded" in text and "FAIL  docker  unreachable" in text
    assert "-> start dockerd" in text and "skip  caddy" in text
    assert text.endswith("1 of 3 checks failed: docker")
    checks = json.loads(render_json(results))["checks"]
    assert checks[0] == {"name": "config", "ok": True, "detail": "loaded", "hint": ""}
    assert checks[2]["skipped"] is True and checks[2]["ok"] is True


def test_a_check_that_raises_is_a_failed_check_not_a_crash():
    def broken(findings):
        raise KeyError("oops")
    (result,) = run_checks(object(), [("broken", broken)])
    assert not result.ok and "KeyError" in result.detail and result.hint
