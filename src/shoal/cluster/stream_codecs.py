"""Compression layers of an NSQ TCP connection: snappy and deflate.

After IDENTIFY negotiates compression (`shoal.queue.protocol`), every byte
in both directions goes through a codec: nsqd's ``--snappy`` is Snappy's
*framing format* (stream identifier, then CRC-checked chunks of at most
64 KiB), ``--deflate`` is raw DEFLATE (no zlib header) flushed with
``Z_SYNC_FLUSH`` after each write, at the negotiated level.

The codecs are sans-IO (bytes in, bytes out, `CodecError` for corrupt
input); `CompressedStream` is the thin trio layer that wraps a stream (the
socket, or TLS over it) with one, so the connection code above it keeps
calling ``send_all`` and ``receive_some``.

Libraries: deflate is the standard library's ``zlib``. Snappy is
``cramjam`` (Rust bindings, wheels for every platform, no system library,
maintained with releases for each new Python): its ``snappy.Compressor``
writes the framing format, and its ``snappy.decompress`` checks each
chunk's masked CRC-32C. python-snappy is today a thin layer over cramjam
whose stream decoder buffers without a bound, so the chunking is done here,
where a declared chunk length can be refused before anything is buffered.

Resource handling:
    Decoding holds at most one incomplete chunk (snappy, < 80 KiB) or the
    compressed bytes of one read (deflate); each `receive_some` returns at
    most ``max_bytes`` of output (deflate) or the output of the complete
    chunks of one read (snappy, each at most 64 KiB), so a small compressed
    input cannot make the node allocate without bound.
"""

from __future__ import annotations

import zlib
from typing import Protocol

import trio

__all__ = [
    "CodecError",
    "CompressedStream",
    "DeflateCodec",
    "SnappyCodec",
    "StreamCodec",
]

#: The framing format's stream identifier chunk.
SNAPPY_STREAM_HEADER = b"\xff\x06\x00\x00sNaPpY"
#: Largest chunk accepted: a compressed 64 KiB block (76,490 bytes at worst)
#: plus its checksum, rounded up; skippable chunks are held to it too.
MAX_SNAPPY_CHUNK = 80 * 1024
#: Bytes read from the wrapped stream per call.
RECEIVE_SIZE = 64 * 1024


class CodecError(Exception):
    """The peer sent bytes that do not decode; the connection must end."""


class StreamCodec(Protocol):
    """A two-way byte transform: what `CompressedStream` needs of a codec."""

    def encode(self, data: bytes) -> bytes:
        """Return the bytes to send for ``data``, complete (flushed)."""
        ...

    def feed(self, data: bytes) -> None:
        """Take bytes received from the peer."""
        ...

    def decoded(self, max_bytes: int) -> bytes:
        """Return decoded bytes available now (empty: feed more).

        Raises:
            CodecError: the input is corrupt.
        """
        ...


class SnappyCodec:
    """Snappy framing format, as nsqd's ``--snappy`` (golang/snappy's Reader and Writer)."""

    def __init__(self) -> None:
        # Imported by the first connection that negotiates snappy, not at start-up.
        import cramjam

        self._compressor = cramjam.snappy.Compressor()
        self._buf = bytearray()

    def encode(self, data: bytes) -> bytes:
        """Compress ``data`` into whole chunks (the first call adds the stream identifier)."""
        self._compressor.compress(data)
        return bytes(self._compressor.flush())

    def feed(self, data: bytes) -> None:
        """Buffer received bytes; they are checked as chunks complete."""
        self._buf += data

    def decoded(self, max_bytes: int) -> bytes:
        """Decompress every complete chunk buffered.

        Raises:
            CodecError: a chunk is too long, of a reserved type, or fails
                decompression or its checksum.
        """
        buf = self._buf
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            kind = buf[pos]
            length = buf[pos + 1] | buf[pos + 2] << 8 | buf[pos + 3] << 16
            if length > MAX_SNAPPY_CHUNK:
                raise CodecError(f"snappy chunk of {length} bytes is too long")
            if 0x02 <= kind <= 0x7F:
                raise CodecError(f"snappy chunk of reserved type {kind:#04x}")
            if end - pos < 4 + length:
                break
            pos += 4 + length
        if pos == 0:
            return b""
        chunks = bytes(buf[:pos])
        del buf[:pos]
        import cramjam  # loaded by __init__: a lookup in sys.modules

        try:
            return bytes(cramjam.snappy.decompress(SNAPPY_STREAM_HEADER + chunks))
        except cramjam.DecompressionError as exc:
            raise CodecError(f"snappy: {exc}") from None


class DeflateCodec:
    """Raw DEFLATE at ``level``, as nsqd's ``--deflate`` (Go's flate with a flush per write)."""

    def __init__(self, level: int) -> None:
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
        self._pending = b""

    def encode(self, data: bytes) -> bytes:
        """Compress ``data`` and flush, so the peer can decode all of it now."""
        compressor = self._compressor
        return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)

    def feed(self, data: bytes) -> None:
        """Buffer received compressed bytes."""
        self._pending += data

    def decoded(self, max_bytes: int) -> bytes:
        """Decompress at most ``max_bytes`` of what is buffered.

        Raises:
            CodecError: the input is not valid DEFLATE.
        """
        if not self._pending:
            return b""
        try:
            out = self._decompressor.decompress(self._pending, max_bytes)
        except zlib.error as exc:
            raise CodecError(f"deflate: {exc}") from None
        self._pending = self._decompressor.unconsumed_tail
        return out


class CompressedStream(trio.abc.Stream):
    """``inner`` with every byte passed through ``codec``.

    Args:
        inner: the stream underneath (a socket stream, or TLS over one).
        codec: the compression both sides agreed on.
        receive_size: bytes read from ``inner`` per read.

    Error handling:
        Corrupt input from the peer raises `trio.BrokenResourceError`, which
        ends the connection like a reset would.
    """

    def __init__(
        self, inner: trio.abc.Stream, codec: StreamCodec, receive_size: int = RECEIVE_SIZE
    ) -> None:
        self.inner = inner
        self.codec = codec
        self._receive_size = receive_size

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Compress ``data`` and send it whole."""
        await self.inner.send_all(self.codec.encode(bytes(data)))

    async def wait_send_all_might_not_block(self) -> None:
        """As the inner stream."""
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Return decompressed bytes, b"" at end of stream.

        Raises:
            trio.BrokenResourceError: the peer sent bytes that do not decode.
        """
        limit = max_bytes if max_bytes is not None else self._receive_size
        codec = self.codec
        while True:
            try:
                out = codec.decoded(limit)
            except CodecError as exc:
                raise trio.BrokenResourceError(str(exc)) from None
            if out:
                return out
            data = await self.inner.receive_some(self._receive_size)
            if not data:
                return b""
            codec.feed(bytes(data))

    async def aclose(self) -> None:
        """Close the inner stream."""
        await self.inner.aclose()
