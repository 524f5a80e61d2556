#!/usr/bin/env python3
"""Regenerate conf/config.example and the README's settings table from agent/config.py."""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent.config import SETTINGS  # noqa: E402
from agent.values import format_duration  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def shown(setting):
    value = setting.default
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return (":" if setting.name.endswith("ROOTS") else ",").join(value)
    if isinstance(value, float):
        return format_duration(value)
    return str(value)


def table():
    rows = ["| Setting | Default | Meaning |", "|---|---|---|"]
    for s in SETTINGS:
        default = f"`{shown(s)}`" if shown(s) else "—"
        rows.append(f"| `{s.name}` | {default} | {s.doc}{' (secret)' if s.secret else ''} |")
    return "\n".join(rows)


def example():
    lines = ["# /etc/pulseup-agent/config: KEY=VALUE lines (systemd EnvironmentFile syntax).",
             "# Generated from agent/config.py by scripts/gen-settings.py; commented lines show defaults.", ""]
    for s in SETTINGS:
        lines += [f"# {s.doc}", f"#{s.name}={shown(s)}", ""]
    return "\n".join(lines)


def main():
    with open(os.path.join(ROOT, "conf", "config.example"), "w", encoding="utf-8") as handle:
        handle.write(example())
    path = os.path.join(ROOT, "README.md")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), f"{BEGIN}\n{table()}\n{END}", text, flags=re.S)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
