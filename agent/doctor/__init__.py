"""``pulseup-agent doctor``: one command that says why an agent is not working.

Each check looks at one part (configuration, certificate, control-plane reachability and
clock, supervisor socket, worker, Docker, Caddy, disk, outbox) and gives a verdict, a detail
and what to do. Checks only read: nothing is written except a probe file that is removed at
once, and the supervisor is asked with an op that changes nothing (docs/operations.md,
"Doctor"). A check whose prerequisite failed is reported as skipped and names that check.
"""

from agent.doctor.report import Result, doctor_main, run_checks

__all__ = ["Result", "doctor_main", "run_checks"]
