"""Command-line entry points: the grid runner, the report, benchmarks, and their flagfiles."""
