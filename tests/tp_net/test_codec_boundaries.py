"""Limits of the codec and cells at their exact boundaries, and limits that must hold before the field checks.

Written for the mutants `make mutate` found alive (docs/BENCHMARKS.md, "Mutation testing"): an off-by-one
at a limit, a msgpack limit dropped because a later field check happened to catch the same input, an id one
past the top of the circuit-id space.
"""

from __future__ import annotations

import random

import msgpack
import pytest

from tp_crypto.errors import LocalProtocolError, RemoteProtocolError
from tp_net.protocol import cells, codec
from tp_net.protocol.document_scan import DOCUMENT_DEPTH_MAX
from tp_net.protocol.frames import CIRCUIT_ID_MAX, CIRCUIT_ID_MIN, Padding, Ping
from tp_net.protocol.relay_messages import RelayBegin, RelayData


def raw(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def padding_of_packed_size(size: int) -> Padding:
    """A Padding frame whose encoding is exactly `size` bytes (bin16 header: 3 bytes + tag + array header)."""
    frame = Padding(bytes(size - 5))
    assert len(codec.encode_frame(frame)) == size
    return frame


# --- batches ---------------------------------------------------------------------------------------------

BATCH_MAX = 1000  # a small batch limit; the rules are the same at BATCH_BYTES_MAX


def test_a_frame_that_fills_a_batch_exactly_is_sent_alone() -> None:
    fitting = padding_of_packed_size(BATCH_MAX - codec._ARRAY_HEADER_BYTES_MAX)
    (batch,) = codec.pack_batches([fitting], BATCH_MAX)
    assert codec.decode_batch(batch) == [fitting]


def test_a_frame_one_byte_over_a_batch_is_refused() -> None:
    too_big = padding_of_packed_size(BATCH_MAX - codec._ARRAY_HEADER_BYTES_MAX + 1)
    with pytest.raises(LocalProtocolError, match="cannot fit"):
        codec.pack_batches([too_big], BATCH_MAX)


def test_frames_that_fill_a_batch_exactly_share_it() -> None:
    ping = Ping(1)
    ping_bytes = len(codec.encode_frame(ping))
    filler = padding_of_packed_size(BATCH_MAX - codec._ARRAY_HEADER_BYTES_MAX - ping_bytes)
    (batch,) = codec.pack_batches([ping, filler], BATCH_MAX)
    assert len(batch) <= BATCH_MAX
    assert len(codec.pack_batches([ping, filler, ping], BATCH_MAX)) == 2


def test_a_batch_of_exactly_the_largest_size_decodes() -> None:
    frame = padding_of_packed_size(codec.BATCH_BYTES_MAX - 1)
    batch = b"\x91" + codec.encode_frame(frame)
    assert len(batch) == codec.BATCH_BYTES_MAX
    assert codec.decode_batch(batch) == [frame]
    with pytest.raises(RemoteProtocolError, match="exceed"):
        codec.decode_batch(batch + b"\x00")


def test_a_long_string_is_refused_by_msgpack_before_any_field_check() -> None:
    # The service field's own check (64 bytes) would refuse it too, but only after msgpack allocated it.
    data = raw([RelayBegin.TAG, 1, "s" * (codec.STR_BYTES_MAX + 1)])
    with pytest.raises(RemoteProtocolError, match="malformed msgpack"):
        codec.decode_frame(data, codec.RELAY_MESSAGES)


@pytest.mark.parametrize(
    ("value", "message"),
    [([1], "frames may not contain containers"), ({"k": 1}, "malformed msgpack")],
)
def test_containers_inside_a_frame_are_refused_before_the_frame_is_built(value: object, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        codec.decode_batch(raw([[Ping.TAG, value]]))


# --- relay payloads --------------------------------------------------------------------------------------

PAYLOAD = cells.RELAY_PAYLOAD_BYTES


def test_relay_messages_that_fill_a_payload_exactly_share_it() -> None:
    first = RelayData(1, b"a")
    used = codec.relay_message_overhead_bytes(first)  # its whole size in the payload, length prefix included
    probe_bytes = 300  # a bin16 like the second message's data
    fixed = codec.relay_message_overhead_bytes(RelayData(1, bytes(probe_bytes))) - probe_bytes
    second = RelayData(1, b"b" * (PAYLOAD - used - fixed))
    assert used + codec.relay_message_overhead_bytes(second) == PAYLOAD
    (payload,) = codec.pack_relay_payloads([first, second], PAYLOAD)
    assert codec.decode_relay_messages(payload) == [first, second]


def test_a_relay_length_past_the_payload_is_refused_as_such() -> None:
    packed = raw([RelayData.TAG, 1, b"x"])
    payload = (len(packed) + 1).to_bytes(2, "big") + packed
    with pytest.raises(RemoteProtocolError, match="exceeds the cell"):
        codec.decode_relay_messages(payload)


# --- documents -------------------------------------------------------------------------------------------


def test_a_document_of_exactly_the_largest_size_passes_both_ways() -> None:
    header_bytes = 5  # bin32
    document = bytes(codec.DOCUMENT_BYTES_MAX - header_bytes)
    data = codec.encode_document(document)
    assert len(data) == codec.DOCUMENT_BYTES_MAX
    assert codec.decode_document(data) == document


def _nested_maps(depth: int) -> object:
    document: object = 0
    for _ in range(depth - 1):
        document = {"k": document}
    return document


def test_the_depth_limit_counts_maps_like_lists() -> None:
    assert codec.decode_document(codec.encode_document(_nested_maps(DOCUMENT_DEPTH_MAX))) is not None
    with pytest.raises(RemoteProtocolError, match="deeper"):
        codec.decode_document(codec.encode_document(_nested_maps(DOCUMENT_DEPTH_MAX + 1)))


@pytest.mark.parametrize("data", [b"\xd4\x01\x00", b"\x91\xd4\x01\x00", b"\xc7\x00\x01"])
def test_a_document_with_any_ext_value_is_refused(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        codec.decode_document(data)


# --- circuit ids -----------------------------------------------------------------------------------------


class _Highest(random.Random):
    """An rng that always draws the largest value randrange allows."""

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        assert stop is not None
        return stop - 1


@pytest.mark.parametrize("dialer", [True, False])
def test_the_highest_circuit_id_draw_stays_in_range(dialer: bool) -> None:
    chosen = cells.new_circuit_id(_Highest(), link_dialer=dialer, in_use=set())
    assert CIRCUIT_ID_MIN <= chosen <= CIRCUIT_ID_MAX
    assert chosen == (CIRCUIT_ID_MAX if dialer else CIRCUIT_ID_MAX & ~cells.DIALER_ID_BIT)
