"""Benchmarks: side-by-side comparisons that print a table and write bench/results/*.json.

Each module runs from one command (`python -m bench.<name>`, `--quick` for a smoke run) and
interleaves its variants (A B A B ...) so load from other processes hits all of them alike.
"""
