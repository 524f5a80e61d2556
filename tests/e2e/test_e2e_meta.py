"""Every registered command has an end-to-end test of a success and of a refusal (issue 18).

The e2e tests declare what they drive with ``@pytest.mark.covers(*commands, outcome=...)``;
this test reads those marks from the modules of tests/e2e (no agent needed) and compares
them with the registry the worker serves (agent/handlers/__init__.py ``build_registry``).
"""

import importlib
import inspect
import os
import pkgutil
import re

from agent.handlers import build_registry
from agent.supervisor.seam import HostSeam

HERE = os.path.dirname(os.path.abspath(__file__))
OUTCOMES = ("success", "refusal")


def declared():
    """{(command, outcome): [test names]} from the covers marks of every e2e test module."""
    found = {}
    for module_info in pkgutil.iter_modules([HERE]):
        if not module_info.name.startswith("test_"):
            continue
        module = importlib.import_module(f"tests.e2e.{module_info.name}")
        for name, func in inspect.getmembers(module, inspect.isfunction):
            if not name.startswith("test_"):
                continue
            for mark in getattr(func, "pytestmark", []):
                if mark.name == "covers":
                    assert mark.kwargs.get("outcome") in OUTCOMES, f"{name}: outcome must be one of {OUTCOMES}"
                    for command in mark.args:
                        found.setdefault((command, mark.kwargs["outcome"]), []).append(name)
    return found


def test_every_registered_command_has_an_e2e_success_and_refusal():
    registered = set(build_registry().names())
    covered = declared()
    missing = [f"{command} ({outcome})" for command in sorted(registered) for outcome in OUTCOMES
               if (command, outcome) not in covered]
    assert missing == [], "registered commands without an e2e test: " + ", ".join(missing)
    unknown = sorted({command for command, _ in covered} - registered)
    assert unknown == [], f"e2e tests declare commands that are not registered: {unknown}"


def test_the_stand_in_seam_intercepts_every_program_starting_method():
    """agent_run.py records host-changing programs in the seam's program methods: a new one in
    HostSeam (agent/supervisor/seam.py) must be intercepted too, or the e2e suite could
    reboot or upgrade the machine."""
    from tests.e2e.agent_run import StandinSeam

    spawns = re.compile(r"subprocess\.(Popen|run|call|check_call|check_output)\("
                        r"|os\.(exec|spawn|fork|system|posix_spawn)")
    starting = {name for name, func in inspect.getmembers(HostSeam, inspect.isfunction)
                if spawns.search(inspect.getsource(func))}
    assert starting, "HostSeam no longer starts programs through subprocess?"
    assert starting <= set(StandinSeam.PROGRAM_METHODS), starting - set(StandinSeam.PROGRAM_METHODS)
    assert all(name in vars(StandinSeam) for name in StandinSeam.PROGRAM_METHODS)
