"""shoal: an NSQ-compatible message broker whose nodes find each other by SWIM gossip."""

__version__ = "0.1.0"

__all__ = ["__version__"]
