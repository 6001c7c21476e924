"""Benchmarks of the load runner (``python -m bench.NAME``): they print figures, they never pass or fail."""
