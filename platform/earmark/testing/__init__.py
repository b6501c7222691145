"""Stand-ins for tests and benchmarks: never imported by the runtime."""
