"""Benchmarks: each module prints a table and saves JSON under bench/results/."""
