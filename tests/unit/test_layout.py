import collections
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_test_module_basenames_are_unique():
    """pytest's rootdir import mode needs unique basenames outside packages."""
    seen = collections.defaultdict(list)
    for directory, _, files in os.walk(ROOT):
        for name in files:
            if name.startswith("test_") and name.endswith(".py"):
                seen[name].append(directory)
    assert {name: dirs for name, dirs in seen.items() if len(dirs) > 1} == {}
