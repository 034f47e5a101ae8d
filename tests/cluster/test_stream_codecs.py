"""The snappy and deflate layers: round trips, byte-by-byte input, pynsq's framing, bad input."""

from __future__ import annotations

import zlib

import pytest
import snappy
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from shoal.cluster.stream_codecs import (
    MAX_SNAPPY_CHUNK,
    CodecError,
    CompressedStream,
    DeflateCodec,
    SnappyCodec,
    StreamCodec,
)


def drain(codec: StreamCodec, max_bytes: int = 1 << 20) -> bytes:
    out = b""
    while chunk := codec.decoded(max_bytes):
        out += chunk
    return out


def codecs() -> list[tuple[StreamCodec, StreamCodec]]:
    return [(SnappyCodec(), SnappyCodec()), (DeflateCodec(6), DeflateCodec(6))]


@pytest.mark.slow
@given(writes=st.lists(st.binary(max_size=3000), max_size=8), data=st.data())
def test_any_writes_fed_in_any_pieces_decode_to_the_same_bytes(
    writes: list[bytes], data: st.DataObject
) -> None:
    for sender, receiver in codecs():
        wire = b"".join(sender.encode(w) for w in writes)
        # A fixed strategy, not one built per example around len(wire): hypothesis
        # caches strategies by their arguments, and under -bb its cache lookup
        # can compare an int with an equal-hashed bytes key (hash(b"") == 0).
        picks = data.draw(st.lists(st.integers(0, 2**20), max_size=6))
        cuts = sorted(pick % (len(wire) + 1) for pick in picks)
        out = b""
        for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
            receiver.feed(wire[start:end])
            out += drain(receiver)
        assert out == b"".join(writes)


def test_large_writes_span_several_snappy_chunks() -> None:
    body = bytes(range(256)) * 1000  # 256,000 bytes: four 64 KiB chunks at least
    wire = SnappyCodec().encode(body)
    receiver = SnappyCodec()
    receiver.feed(wire)
    assert drain(receiver) == body


def test_pynsq_framing_one_stream_per_message_decodes() -> None:
    # pynsq's SnappyEncoder starts a new stream (identifier chunk) per write.
    wire = b"".join(snappy.StreamCompressor().compress(b"PUB t\n%d" % n) for n in range(5))
    receiver = SnappyCodec()
    receiver.feed(wire)
    assert drain(receiver) == b"".join(b"PUB t\n%d" % n for n in range(5))
    # And the node's output decodes with python-snappy's stream decoder.
    assert snappy.StreamDecompressor().decompress(SnappyCodec().encode(b"OK")) == b"OK"


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"\x00" + (MAX_SNAPPY_CHUNK + 1).to_bytes(3, "little"), "too long"),
        (b"\x05\x01\x00\x00x", "reserved type"),
        (b"\x01\x09\x00\x00\x00\x00\x00\x00hello", "snappy"),  # bad checksum
    ],
)
def test_bad_snappy_input_is_an_error_before_buffering(wire: bytes, reason: str) -> None:
    codec = SnappyCodec()
    codec.feed(wire)
    with pytest.raises(CodecError, match=reason):
        codec.decoded(1 << 20)


def test_deflate_output_is_bounded_per_call() -> None:
    # 10 MB of zeros compress to about 10 kB: the receiver hands them out in
    # bounded pieces, never all at once.
    sender, receiver = DeflateCodec(9), DeflateCodec(6)
    receiver.feed(sender.encode(bytes(10_000_000)))
    sizes = []
    while piece := receiver.decoded(65536):
        sizes.append(len(piece))
    assert max(sizes) <= 65536
    assert sum(sizes) == 10_000_000


def test_deflate_garbage_is_an_error() -> None:
    codec = DeflateCodec(6)
    codec.feed(b"\xff" * 16)
    with pytest.raises(CodecError):
        codec.decoded(1024)


def test_deflate_is_raw_and_level_is_honoured() -> None:
    wire = DeflateCodec(1).encode(b"hello")
    assert zlib.decompressobj(-15).decompress(wire) == b"hello"


async def test_compressed_stream_over_a_memory_stream() -> None:
    left, right = trio.testing.memory_stream_pair()
    a = CompressedStream(left, SnappyCodec())
    b = CompressedStream(right, SnappyCodec())
    with trio.fail_after(5):
        await a.send_all(b"hello " * 1000)
        got = b""
        while len(got) < 6000:
            got += await b.receive_some(1000)
        assert got == b"hello " * 1000
        await right.send_all(b"\x05\x01\x00\x00x")  # raw garbage under b's codec
        with pytest.raises(trio.BrokenResourceError, match="reserved type"):
            await a.receive_some()
        await a.aclose()
        assert await b.receive_some() == b""
