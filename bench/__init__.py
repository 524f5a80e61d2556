"""Benchmarks: each prints absolute figures and ratios against a baseline measured in the same run.

Run them all with ``python -m bench.run`` (table + ``bench/results.json``).
"""
