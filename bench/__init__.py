"""Side-by-side benchmarks (``make bench``): ratios measured in one run, written to BENCHMARKS.md."""
