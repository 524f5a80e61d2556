#!/usr/bin/env python3
"""Regenerate the "Commands" and "Events" sections of docs/commands.md from the registry and
the event catalogue (agent/handlers/catalogue.py); ``--check`` exits 1 when the file is stale."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent.handlers import catalogue  # noqa: E402

PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "commands.md")


def rendered(text):
    """``text`` with the part between the markers replaced by the current catalogue."""
    head, begin, rest = text.partition(catalogue.BEGIN)
    _, end, tail = rest.partition(catalogue.END)
    if not begin or not end:
        raise SystemExit(f"{PATH}: markers {catalogue.BEGIN} / {catalogue.END} not found")
    return f"{head}{begin}\n{catalogue.markdown(catalogue.describe())}\n{end}{tail}"


def main(argv):
    with open(PATH, encoding="utf-8") as handle:
        text = handle.read()
    new = rendered(text)
    if "--check" in argv:
        return 0 if new == text else 1
    with open(PATH, "w", encoding="utf-8") as handle:
        handle.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
