"""Benchmarks: each runs our path and its baseline side by side, in one run, and prints the ratio."""
