"""Benchmarks: our function next to msgraph-sdk and a hand-written floor, on local emulators.

Run with `make bench` (or `.venv/bin/python -m bench.run`); see docs/PERFORMANCE.md. Nothing here
is deployed (.funcignore) and nothing here asserts a timing: the figures are printed and compared
with the targets, never used to fail a build.
"""
