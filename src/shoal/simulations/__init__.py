"""A deterministic discrete-event simulator driving the real membership engine."""
