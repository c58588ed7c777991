"""Benchmarks of token.place (run from the repository root: `python -m benchmarks.NAME`)."""
