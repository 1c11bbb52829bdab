"""Benchmarks: each compares cortexreplay against a baseline measured in the same run (ratios)."""
