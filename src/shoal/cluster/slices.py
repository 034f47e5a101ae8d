"""Large publishes in slices, so no single request holds the event loop.

Every node shares one trio thread: while a handler runs, nothing else does,
not the gossip probes that keep the node alive in its peers' eyes, nor
``/ping``, nor other clients. A legal TCP ``MPUB`` of 1,048,575 one-byte
messages held the loop for 5.4 s and a 5 MB ``/mpub`` body of 2.6 M lines for
19 s, long enough for peers to declare a healthy node dead.

So a batch is published `PUBLISH_SLICE` messages at a time, and a text body
is split `PARSE_SLICE_BYTES` at a time, with a checkpoint between slices: one
slice costs a few milliseconds, and everything else runs between two. The
reply is sent once the whole batch is stored, as before. What a batch was
promised does not change: messages keep their order, and a failure part way
(a backend error, or the topic deleted meanwhile) stores what came before it
and answers an error, which is what a backend error in the middle of one
`Topic.publish` already did (channels may hold some of the batch).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

import trio
import trio.lowlevel

from shoal.queue.commands import Mpub
from shoal.queue.protocol import AuthQuery, ReplicatedPublish

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from shoal.queue.commands import Command
    from shoal.queue.protocol import ClientV2

__all__ = [
    "PARSE_SLICE_BYTES",
    "PUBLISH_SLICE",
    "LineTooLongError",
    "execute_mpub",
    "slice_bounds",
    "split_lines",
]

#: Messages published between two checkpoints.
PUBLISH_SLICE: Final = 1024
#: Bytes of a text body split into lines between two checkpoints.
PARSE_SLICE_BYTES: Final = 16 * 1024


class LineTooLongError(ValueError):
    """A line of a text body is longer than the largest message."""


def slice_bounds(count: int, size: int = PUBLISH_SLICE) -> list[tuple[int, int]]:
    """Return ``(start, stop)`` of each slice of ``count`` items, in order."""
    return [(start, min(start + size, count)) for start in range(0, count, size)]


async def execute_mpub(
    client: ClientV2,
    command: Mpub,
    authenticate: Callable[[Command, AuthQuery], Awaitable[bytes | None]],
) -> bytes | None:
    """Execute an ``MPUB`` in slices, with a checkpoint between two.

    Args:
        client: the connection's protocol state.
        command: the whole batch.
        authenticate: what the connection does when a slice raises
            `AuthQuery` (the cached AUTH answer expired): ask the auth
            servers, then execute that slice, and only it, again.

    Returns:
        The reply of the last slice (``OK``).

    Raises:
        ClientError: as `ClientV2.execute` raises it, for the first slice that
            fails; the slices before it are stored.
    """
    bodies = command.bodies
    response: bytes | None = None
    for index, (start, stop) in enumerate(slice_bounds(len(bodies))):
        if index:
            await trio.lowlevel.checkpoint()
        part = Mpub(command.topic, bodies[start:stop])
        try:
            response = client.execute(part, time.time())
        except AuthQuery as query:
            response = await authenticate(part, query)
        except ReplicatedPublish as pending:
            # A replicated topic takes the rest whole: one record, one commit.
            rest = tuple(bodies[start:])
            raise ReplicatedPublish(
                pending.verb, pending.topic, rest, pending.defer, pending.failed_code
            ) from None
    return response


async def split_lines(body: bytes, max_msg_size: int) -> list[bytes]:
    """Split a text ``/mpub`` body into its non-empty lines, in slices.

    Raises:
        LineTooLongError: a line is longer than ``max_msg_size`` (checked for
            the whole body before the caller publishes anything).
    """
    lines: list[bytes] = []
    size = len(body)
    pos = 0
    # Bounded: every pass moves ``pos`` forward by at least one slice or to the end.
    while pos < size:
        if pos:
            await trio.lowlevel.checkpoint()
        cut = body.find(b"\n", min(pos + PARSE_SLICE_BYTES, size))
        end = size if cut < 0 else cut
        part = [line for line in body[pos:end].split(b"\n") if line]
        if part and max(map(len, part)) > max_msg_size:
            raise LineTooLongError(f"a line is longer than {max_msg_size} bytes")
        lines += part
        pos = end + 1
    return lines
