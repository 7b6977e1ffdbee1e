"""tfp-ext benchmarks: `python -m benchmarks [NAME ...] [--quick]` (see benchmarks/README.md)."""
