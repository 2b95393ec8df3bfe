"""Benchmarks behind ``fieldforge bench NAME``: each prints a table and writes JSON."""
