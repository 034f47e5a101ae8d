"""The exception tree shared by every package.

Errors are split by who is at fault, as h11 does: `LocalProtocolError` means
the caller misused a core (a bug on our side), `RemoteProtocolError` means a
peer sent bytes we refuse. Any other exception escaping a core is a bug.
NSQ's own client errors (`shoal.queue.errors`) sit beside these because their
code is part of the wire protocol.
"""


class ShoalError(Exception):
    """Base of every error shoal raises on purpose."""


class ConfigError(ShoalError):
    """A configuration value is out of range or inconsistent."""


class ProtocolError(ShoalError):
    """Base of protocol errors; see the two subclasses for whose fault it is."""


class LocalProtocolError(ProtocolError):
    """The caller asked a core to do something its state does not allow."""


class RemoteProtocolError(ProtocolError):
    """A peer sent malformed, oversized or unauthenticated input."""
