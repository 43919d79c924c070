"""Offline evaluation: the harness behind ``hyrec eval`` / ``python -m eval`` and the benchmarks."""
