"""Benchmarks of the fraud detector. They print figures and assert nothing.

`python -m bench` runs them all; `docs/performance.md` records the results.
"""
