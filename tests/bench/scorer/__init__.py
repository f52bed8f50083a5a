"""Helpers of ``tests/bench/bench_scorer.py``: models, contenders, the load generator."""
