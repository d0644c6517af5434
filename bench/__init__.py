"""Side-by-side benchmarks: `python bench/run.py [--quick]` (see run.py)."""
