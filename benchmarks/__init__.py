"""The benchmarks: `python -m benchmarks [--quick]` runs them all (see __main__.py)."""
