"""Garbage at the frame decoder yields only RemoteProtocolError, in bounded memory."""

import os
import tracemalloc

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tp_crypto.errors import RemoteProtocolError
from tp_net.protocol import codec
from tp_net.protocol.frames import CELL_BODY_BYTES, Cell, Frame, LinkClose, LinkHello, Padding, Ping, Pong

EXAMPLES = int(os.environ.get("TP_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

frames = st.one_of(
    st.builds(LinkHello, st.integers(0, 2**16 - 1), st.none() | st.binary(min_size=32, max_size=32)),
    st.builds(Ping, st.integers(0, 2**64 - 1)),
    st.builds(Pong, st.integers(0, 2**64 - 1)),
    st.builds(
        Cell,
        st.integers(2**31, 2**32 - 1),
        st.integers(0, 15),
        st.binary(min_size=CELL_BODY_BYTES, max_size=CELL_BODY_BYTES),
    ),
    st.builds(Padding, st.binary(max_size=600)),
    st.builds(LinkClose, st.integers(0, 255)),
)


def decode_or_reject(data: bytes) -> list[Frame] | None:
    try:
        return codec.decode_batch(data)
    except RemoteProtocolError:
        return None


@FUZZ
@given(st.lists(frames, max_size=40))
def test_any_frames_round_trip(items: list[Frame]) -> None:
    decoded = [f for batch in codec.pack_batches(items) for f in codec.decode_batch(batch)]
    assert decoded == items


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_only_raise_protocol_errors(data: bytes) -> None:
    decode_or_reject(data)


@FUZZ
@given(st.lists(frames, min_size=1, max_size=10), st.data())
def test_mutated_batches_only_raise_protocol_errors(items: list[Frame], data: st.DataObject) -> None:
    batch = bytearray(codec.pack_batches(items)[0])
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(batch) - 1))
        batch[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(batch)))
    decoded = decode_or_reject(bytes(batch[:cut]))
    if decoded is not None:
        for frame in decoded:
            frame.check()


def test_decoding_hostile_headers_allocates_little() -> None:
    hostile = [
        b"\xc6\xff\xff\xff\xff",
        b"\xdd\xff\xff\xff\xff",
        b"\xdf\xff\xff\xff\xff",
        b"\xdb\xff\xff\xff\xff",
        b"\x91" * 60000,
    ]
    tracemalloc.start()
    try:
        for data in hostile:
            decode_or_reject(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024
