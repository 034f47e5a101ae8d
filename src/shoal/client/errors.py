"""Errors the client raises, split by what the caller can do about them.

`NodeUnavailable` (and `ConnectionClosed`) mean a node could not be reached
or went away: a `Producer` retries such failures on another node, a
`Consumer` reconnects. `NSQError` carries an error frame the node sent: the
request itself was refused (a bad topic name, an oversize body) and sending
it elsewhere would fail the same way. `HTTPStatusError` is the HTTP API's
``{"message": CODE}`` refusal. `NoNodesAvailable` is what a caller sees when
every node it could try has failed.
"""

from __future__ import annotations

from shoal.errors import ShoalError

__all__ = [
    "ConnectionClosed",
    "HTTPStatusError",
    "NSQError",
    "NoNodesAvailable",
    "NodeUnavailable",
]


class NodeUnavailable(ShoalError):
    """A node could not be reached, or did not answer in time.

    Attributes:
        address: ``host:port`` of the node as it was dialled.
    """

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot reach {address}: {reason}")
        self.address = address
        self.reason = reason


class ConnectionClosed(NodeUnavailable):
    """An established connection ended before the request was answered."""


class NSQError(ShoalError):
    """The node answered a command with an error frame.

    Attributes:
        code: the error code, e.g. ``E_BAD_TOPIC``; the only part of the
            frame that belongs to the protocol.
        description: the human-readable rest of the frame.
    """

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code} {description}".strip())
        self.code = code
        self.description = description


class HTTPStatusError(ShoalError):
    """An HTTP API answered with a status other than 2xx.

    Attributes:
        status: the HTTP status code.
        message: the ``message`` of NSQ's JSON error body (``TOPIC_NOT_FOUND``),
            or the body's text when it is not that shape.
        address: ``host:port`` of the node that answered.
    """

    def __init__(self, address: str, status: int, message: str) -> None:
        super().__init__(f"{address} answered {status} {message}".rstrip())
        self.address = address
        self.status = status
        self.message = message


class NoNodesAvailable(ShoalError):
    """Every node that could serve the request failed, or none is known."""
