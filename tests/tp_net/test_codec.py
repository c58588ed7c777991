import msgpack
import pytest

from tp_crypto.errors import LocalProtocolError, RemoteProtocolError
from tp_net.protocol import codec
from tp_net.protocol.frames import CELL_BODY_BYTES, Cell, LinkClose, LinkHello, Padding, Ping, Pong

EXAMPLES = [
    LinkHello(1, None),
    LinkHello(1, b"\x01" * 32),
    Ping(0),
    Pong(2**64 - 1),
    Cell(2**31, 3, b"x" * CELL_BODY_BYTES),
    Cell(2**32 - 1, 1, bytes(CELL_BODY_BYTES)),
    Padding(b""),
    Padding(b"y" * 5000),
    LinkClose(3),
]


@pytest.mark.parametrize("frame", EXAMPLES)
def test_frame_round_trips(frame: object) -> None:
    assert codec.decode_frame(codec.encode_frame(frame)) == frame  # type: ignore[arg-type]


def test_batch_round_trips_in_order() -> None:
    frames = [Padding(bytes([i % 256]) * 100) for i in range(2000)]
    batches = codec.pack_batches(frames)
    assert len(batches) > 1
    assert all(len(batch) <= codec.BATCH_BYTES_MAX for batch in batches)
    decoded = [frame for batch in batches for frame in codec.decode_batch(batch)]
    assert decoded == frames


def test_many_small_frames_respect_the_frame_count_limit() -> None:
    frames = [Ping(i) for i in range(codec.FRAMES_PER_BATCH_MAX * 2 + 5)]
    batches = codec.pack_batches(frames)
    assert [len(codec.decode_batch(b)) for b in batches] == [1024, 1024, 5]


def test_a_frame_too_large_for_any_batch_is_refused_locally() -> None:
    with pytest.raises(LocalProtocolError, match="cannot fit"):
        codec.pack_batches([Padding(b"x" * codec.BATCH_BYTES_MAX)])


def test_encoding_an_out_of_range_value_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        codec.encode_frame(Ping(2**70))


def raw(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "malformed"),
        (b"\xc1", "malformed"),
        (raw([99, 1]), "unknown frame tag"),
        (raw([]), "non-empty array"),
        (raw(5), "non-empty array"),
        (raw([2]), "needs 1 fields"),
        (raw([2, 1, 2]), "needs 1 fields"),
        (raw([2, "1"]), "wrong type"),
        (raw([2, True]), "wrong type"),
        (raw([4, 2**31, 3, "text"]), "wrong type"),
        (raw([4, 2**31 - 1, 3, bytes(CELL_BODY_BYTES)]), "outside"),
        (raw([4, 2**32, 3, bytes(CELL_BODY_BYTES)]), "outside"),
        (raw([4, 2**31, 16, bytes(CELL_BODY_BYTES)]), "outside"),
        (raw([4, 2**31, 3, bytes(CELL_BODY_BYTES - 1)]), "expected"),
        (raw([1, 1, b"short"]), "node id must be 32 bytes"),
        (raw([2, [1]]), "wrong type"),
        (raw([2, {"a": 1}]), "malformed"),
        (raw([2, 1]) + b"\x00", "malformed"),
        (raw([True, 1]), "unknown frame tag"),
    ],
)
def test_bad_frames_are_remote_protocol_errors(data: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        codec.decode_frame(data)


@pytest.mark.parametrize(
    "data",
    [
        raw([[2, 1], 5]),
        raw([[2, [[1]]]]),
        raw({"frames": []}),
        b"\x91" * 5000 + b"\x00",
        raw([[6, b"x"]] * (codec.FRAMES_PER_BATCH_MAX + 1)),
        b"\xc6\xff\xff\xff\xff",  # bin32 header claiming 4 GiB
        b"\xdd\xff\xff\xff\xff",  # array32 header claiming 4 G items
        b"\xdb\x00\x00\x10\x00" + b"a" * 10,  # str32 longer than the string limit
        b"\xd9\x02\xff\xfe",  # invalid UTF-8
        b"\xc7\x01\x05\x00",  # ext type
        b"\x00" * (codec.BATCH_BYTES_MAX + 1),
    ],
)
def test_bad_batches_are_remote_protocol_errors(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        codec.decode_batch(data)


def test_every_cell_frame_encodes_to_the_same_size() -> None:
    sizes = {
        len(codec.encode_frame(Cell(circuit_id, command, bytes(CELL_BODY_BYTES))))
        for circuit_id in (2**31, 2**31 + 1, 2**32 - 1)
        for command in (1, 2, 3, 4)
    }
    assert len(sizes) == 1
