"""Public test doubles: an in-memory network with a fault hook."""
