"""Demo data for trying Cleardesk and for benchmarks."""
