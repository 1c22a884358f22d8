"""Benchmark of `python-worker run`: throughput, cost and priority against raw limits."""
