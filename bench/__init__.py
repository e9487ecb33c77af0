"""Benchmarks of the bridge against real loopback servers; they print figures, nothing asserts."""
