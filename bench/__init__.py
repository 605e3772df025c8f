"""Benchmarks: scripts that measure the daemon against the floor and at simulated scale."""
