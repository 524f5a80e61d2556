"""Running the doctor's checks and showing their verdicts (text or ``--json``)."""

import json
import sys
from dataclasses import asdict, dataclass

from agent import exitcodes
from agent.errors import ConfigError


@dataclass
class Result:
    """The verdict of one check. ``skipped`` checks could not run because an earlier check
    failed; they do not count as failures (the earlier check already does)."""
    name: str
    ok: bool
    detail: str
    hint: str = ""
    skipped: bool = False


def passed(name, detail, hint=""):
    return Result(name, True, detail, hint)


def failed(name, detail, hint):
    return Result(name, False, detail, hint)


def skipped(name, because):
    return Result(name, True, f"skipped: {because}", "", skipped=True)


class Findings:
    """What the checks learned so far; later checks read earlier verdicts and facts."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.results = {}
        self.facts = {}

    def ok(self, name):
        result = self.results.get(name)
        return result is not None and result.ok and not result.skipped


def all_checks():
    from agent.doctor import host, identity, network, storage
    return identity.CHECKS + network.CHECKS + host.CHECKS + storage.CHECKS


def run_checks(cfg, checks=None):
    """Every check's Result, in order. A check that raises is a failed check, never a crash."""
    findings = Findings(cfg)
    for name, check in (checks if checks is not None else all_checks()):
        try:
            result = check(findings)
        except Exception as exc:  # an entry point: one broken check must not hide the others
            result = failed(name, f"the check itself failed: {exc.__class__.__name__}: {exc}",
                            "report this as a bug of `pulseup-agent doctor`")
        findings.results[name] = result
    return list(findings.results.values())


def config_failure(exc):
    return failed("config", f"the configuration cannot be loaded: {exc}",
                  "fix the setting named above (`pulseup-agent check-config` shows every value "
                  "and where it came from)")


def render_json(results):
    checks = [{k: v for k, v in asdict(r).items() if k != "skipped" or v} for r in results]
    return json.dumps({"checks": checks}, indent=2)


def render_text(results):
    width = max(len(r.name) for r in results)
    lines = []
    for result in results:
        verdict = "skip" if result.skipped else "ok" if result.ok else "FAIL"
        lines.append(f"{verdict:<4}  {result.name:<{width}}  {result.detail}")
        if result.hint and not result.ok:
            lines.append(f"{'':<4}  {'':<{width}}  -> {result.hint}")
    bad = [r.name for r in results if not r.ok]
    lines.append("")
    lines.append(f"{len(bad)} of {len(results)} checks failed: {', '.join(bad)}" if bad
                 else f"All {len(results)} checks passed.")
    return "\n".join(lines)


def doctor_main(args, load_config, out=None):
    """Run every check and print the verdicts; exit code OK only when all pass.

    ``load_config`` is a callable returning the Config or raising ConfigError (a config
    that cannot be loaded is the first failed check, not a crash)."""
    out = out or sys.stdout
    try:
        cfg = load_config()
    except ConfigError as exc:
        results = [config_failure(exc)]
    else:
        results = run_checks(cfg)
    out.write((render_json(results) if getattr(args, "json", False) else render_text(results)) + "\n")
    out.flush()
    return exitcodes.OK if all(r.ok for r in results) else exitcodes.FAILURE
