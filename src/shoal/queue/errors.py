"""NSQ's client error codes and the two exceptions that carry them.

Rules (docs/nsq.md §1.3, §0 trap 7):

1. Only the code is part of the protocol. Clients look at the leading word of
   an error frame; the description is for humans, but we keep nsqd's wording
   so that logs and tests read the same against either server.
2. Every error is fatal except ``E_FIN_FAILED``, ``E_REQ_FAILED`` and
   ``E_TOUCH_FAILED``: after a `FatalClientError` the server sends the error
   frame and closes the connection; after a plain `ClientError` it sends the
   frame and keeps reading.

The codes below are on the wire; append only.
"""

from __future__ import annotations

from shoal.errors import ShoalError
from shoal.queue.frames import encode_error

__all__ = [
    "E_AUTH_DISABLED",
    "E_AUTH_ERROR",
    "E_AUTH_FAILED",
    "E_AUTH_FIRST",
    "E_BAD_BODY",
    "E_BAD_CHANNEL",
    "E_BAD_MESSAGE",
    "E_BAD_PROTOCOL",
    "E_BAD_TOPIC",
    "E_DPUB_FAILED",
    "E_FIN_FAILED",
    "E_IDENTIFY_FAILED",
    "E_INVALID",
    "E_MPUB_FAILED",
    "E_PUB_FAILED",
    "E_REQ_FAILED",
    "E_SUB_FAILED",
    "E_TOUCH_FAILED",
    "E_UNAUTHORIZED",
    "NON_FATAL",
    "ClientError",
    "FatalClientError",
]

E_INVALID = "E_INVALID"
E_BAD_PROTOCOL = "E_BAD_PROTOCOL"
E_BAD_BODY = "E_BAD_BODY"
E_BAD_TOPIC = "E_BAD_TOPIC"
E_BAD_CHANNEL = "E_BAD_CHANNEL"
E_BAD_MESSAGE = "E_BAD_MESSAGE"
E_PUB_FAILED = "E_PUB_FAILED"
E_MPUB_FAILED = "E_MPUB_FAILED"
E_DPUB_FAILED = "E_DPUB_FAILED"
E_FIN_FAILED = "E_FIN_FAILED"
E_REQ_FAILED = "E_REQ_FAILED"
E_TOUCH_FAILED = "E_TOUCH_FAILED"
E_SUB_FAILED = "E_SUB_FAILED"
E_IDENTIFY_FAILED = "E_IDENTIFY_FAILED"
E_AUTH_FIRST = "E_AUTH_FIRST"
E_AUTH_FAILED = "E_AUTH_FAILED"
E_AUTH_DISABLED = "E_AUTH_DISABLED"
E_AUTH_ERROR = "E_AUTH_ERROR"
E_UNAUTHORIZED = "E_UNAUTHORIZED"

#: The only codes after which nsqd keeps the connection open (docs/nsq.md §0 trap 7).
NON_FATAL = frozenset({E_FIN_FAILED, E_REQ_FAILED, E_TOUCH_FAILED})


class ClientError(ShoalError):
    """A client's request failed; answer with an error frame and keep the connection.

    Attributes:
        code: the NSQ error code, for example ``E_FIN_FAILED``; the only part
            clients act on.
        description: human-readable detail in nsqd's wording.
    """

    def __init__(self, code: str, description: str) -> None:
        # Passing both to Exception keeps the error picklable and its args honest.
        super().__init__(code, description)
        self.code = code
        self.description = description

    @property
    def fatal(self) -> bool:
        """Whether the server must close the connection after the error frame."""
        return False

    def frame(self) -> bytes:
        """Return the encoded error frame ``<code> <description>``."""
        return encode_error(self.code, self.description)

    def __str__(self) -> str:
        return f"{self.code} {self.description}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.description!r})"


class FatalClientError(ClientError):
    """A client broke the protocol; answer with an error frame, then close."""

    @property
    def fatal(self) -> bool:
        """Always true: the connection must be closed after the error frame."""
        return True
