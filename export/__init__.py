"""Build, train, export and evaluate the dual-head model (needs the `build` extra: torch)."""
