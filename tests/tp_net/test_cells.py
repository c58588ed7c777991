"""Cells, circuit ids, and the codec of relay messages and documents."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tp_crypto.errors import LocalProtocolError, RemoteProtocolError
from tp_net.protocol import codec, document_scan
from tp_net.protocol.cells import (
    DIALER_ID_BIT,
    RELAY_DATA_BYTES_MAX,
    RELAY_PAYLOAD_BYTES,
    CellCommand,
    DestroyReason,
    destroy_cell,
    destroy_reason,
    handshake_cell,
    handshake_message,
    new_circuit_id,
    relay_cell,
)
from tp_net.protocol.frames import CELL_BODY_BYTES, CIRCUIT_ID_MAX, CIRCUIT_ID_MIN, Cell, Frame
from tp_net.protocol.relay_messages import (
    ADDRESS_BYTES_MAX,
    HOP_HANDSHAKE_BYTES_MAX,
    SENDME_DIGEST_BYTES,
    SERVICE_NAME_BYTES_MAX,
    STREAM_ID_MAX,
    RelayBegin,
    RelayData,
    RelayDrop,
    RelayEnd,
    RelayExtend,
    RelayExtended,
    RelaySendme,
)

# --- cells ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 48, 300, CELL_BODY_BYTES - 2])
def test_handshake_cells_round_trip_at_fixed_size(size: int) -> None:
    message = bytes(range(256)) * 4
    cell = handshake_cell(CIRCUIT_ID_MIN, CellCommand.CREATE, message[:size])
    assert len(cell.body) == CELL_BODY_BYTES
    assert cell.command == CellCommand.CREATE
    cell.check()
    assert handshake_message(cell) == message[:size]


def test_handshake_message_too_long_for_a_cell_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        handshake_cell(CIRCUIT_ID_MIN, CellCommand.CREATE, bytes(CELL_BODY_BYTES - 1))


def test_handshake_length_beyond_the_cell_is_a_remote_error() -> None:
    body = (CELL_BODY_BYTES - 1).to_bytes(2, "big") + bytes(CELL_BODY_BYTES - 2)
    with pytest.raises(RemoteProtocolError):
        handshake_message(Cell(CIRCUIT_ID_MIN, CellCommand.CREATED, body))


@pytest.mark.parametrize("reason", list(DestroyReason))
def test_destroy_cells_carry_their_reason(reason: DestroyReason) -> None:
    cell = destroy_cell(CIRCUIT_ID_MAX, reason)
    cell.check()
    assert cell.command == CellCommand.DESTROY
    assert destroy_reason(cell) is reason


def test_unknown_destroy_reason_reads_as_none() -> None:
    assert (
        destroy_reason(Cell(CIRCUIT_ID_MIN, CellCommand.DESTROY, b"\xff" * CELL_BODY_BYTES))
        is DestroyReason.NONE
    )


def test_relay_cell_keeps_its_body() -> None:
    body = random.Random(1).randbytes(CELL_BODY_BYTES)
    cell = relay_cell(CIRCUIT_ID_MIN + 5, body)
    assert (cell.circuit_id, cell.command, cell.body) == (CIRCUIT_ID_MIN + 5, CellCommand.RELAY, body)


def test_every_cell_encodes_to_the_same_size_on_a_link() -> None:
    """An observer of a link learns nothing from sizes: commands and ids do not change the length."""
    rng = random.Random(2)
    cells = [
        handshake_cell(CIRCUIT_ID_MIN, CellCommand.CREATE, b"x" * 48),
        handshake_cell(CIRCUIT_ID_MAX, CellCommand.CREATED, b""),
        destroy_cell(CIRCUIT_ID_MIN | DIALER_ID_BIT, DestroyReason.SHUTDOWN),
        relay_cell(CIRCUIT_ID_MAX - 1, rng.randbytes(CELL_BODY_BYTES)),
    ]
    assert len({len(codec.encode_frame(cell)) for cell in cells}) == 1


# --- circuit ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dialer", [True, False])
def test_circuit_ids_come_from_this_sides_half(dialer: bool) -> None:
    rng = random.Random(3)
    for _ in range(500):
        circuit_id = new_circuit_id(rng, link_dialer=dialer, in_use=set())
        assert CIRCUIT_ID_MIN <= circuit_id <= CIRCUIT_ID_MAX
        assert bool(circuit_id & DIALER_ID_BIT) is dialer
        Cell(circuit_id, CellCommand.RELAY, bytes(CELL_BODY_BYTES)).check()


def test_circuit_ids_avoid_ids_in_use() -> None:
    rng = random.Random(4)
    in_use: set[int] = set()
    for _ in range(2000):
        circuit_id = new_circuit_id(rng, link_dialer=True, in_use=in_use)
        assert circuit_id not in in_use
        in_use.add(circuit_id)
    taken: dict[int, object] = {new_circuit_id(random.Random(5), link_dialer=False, in_use=set()): object()}
    assert new_circuit_id(random.Random(5), link_dialer=False, in_use=taken) not in taken


def test_circuit_ids_are_deterministic_per_seed() -> None:
    ids = [new_circuit_id(random.Random(9), link_dialer=True, in_use=set()) for _ in range(2)]
    assert ids[0] == ids[1]


class _Everything(set[int]):
    def __contains__(self, item: object) -> bool:
        return True


def test_no_free_circuit_id_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        new_circuit_id(random.Random(0), link_dialer=True, in_use=_Everything())


# --- relay messages -------------------------------------------------------------------------------

NODE_ID = bytes(range(32))
MESSAGES: list[Frame] = [
    RelayExtend(NODE_ID, "wss://relay.example:443", b"h" * 48),
    RelayExtend(NODE_ID, None, b"h" * HOP_HANDSHAKE_BYTES_MAX),
    RelayExtended(b"r" * 48),
    RelayBegin(1, "inference"),
    RelayBegin(STREAM_ID_MAX, "s" * SERVICE_NAME_BYTES_MAX),
    RelayData(7, b"d"),
    RelayData(STREAM_ID_MAX, b"\xff" * RELAY_DATA_BYTES_MAX),
    RelayEnd(3, 0),
    RelayEnd(3, 255),
    RelaySendme(0, b"s" * SENDME_DIGEST_BYTES),
    RelaySendme(9, b""),
    RelayDrop(),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_relay_messages_round_trip_in_a_fixed_payload(message: Frame) -> None:
    payload = codec.encode_relay_payload(message, RELAY_PAYLOAD_BYTES)
    assert len(payload) == RELAY_PAYLOAD_BYTES
    assert codec.decode_relay_payload(payload) == message


def test_relay_data_max_is_exactly_what_fits() -> None:
    assert RELAY_DATA_BYTES_MAX > 900
    with pytest.raises(LocalProtocolError):
        codec.encode_relay_payload(
            RelayData(STREAM_ID_MAX, b"x" * (RELAY_DATA_BYTES_MAX + 1)), RELAY_PAYLOAD_BYTES
        )
    overhead = codec.relay_message_overhead_bytes(RelayData(STREAM_ID_MAX, b"x" * RELAY_DATA_BYTES_MAX))
    assert overhead == RELAY_PAYLOAD_BYTES


def _payload_of(items: list[Any]) -> bytes:
    packed = codec._pack(items)
    return len(packed).to_bytes(2, "big") + packed + bytes(RELAY_PAYLOAD_BYTES - 2 - len(packed))


@pytest.mark.parametrize(
    "items",
    [
        [32, b"short", None, b""],  # node id of the wrong length
        [32, NODE_ID, "a" * (ADDRESS_BYTES_MAX + 1), b""],
        [32, NODE_ID, None, b"h" * (HOP_HANDSHAKE_BYTES_MAX + 1)],
        [32, NODE_ID, 5, b""],  # address of the wrong type
        [33, b"r" * (HOP_HANDSHAKE_BYTES_MAX + 1)],
        [34, 0, "inference"],  # stream 0 is the circuit
        [34, 1, ""],
        [34, 1, "s" * (SERVICE_NAME_BYTES_MAX + 1)],
        [34, STREAM_ID_MAX + 1, "inference"],
        [35, 1, b""],  # empty DATA
        [35, 0, b"x"],
        [35, True, b"x"],  # bool is not an int
        [36, 1, 256],
        [36, 1, -1],
        [37, 1, b"x" * 5],  # digest of the wrong length
        [37, -1, b""],
        [38, 1],  # DROP takes no fields
        [4, CIRCUIT_ID_MIN, 3, b""],  # a link frame tag is not a relay message
        [99],
        [],
    ],
)
def test_malformed_relay_messages_are_refused(items: list[Any]) -> None:
    with pytest.raises(RemoteProtocolError):
        codec.decode_relay_payload(_payload_of(items))


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00",
        b"\x00\x00" + bytes(100),  # zero-length message
        b"\xff\xff" + bytes(100),  # length beyond the payload
        b"\x00\x05\x91\x26" + bytes(100),  # length covers padding: trailing bytes in the message
        b"\x00\x02\x91\xc1",  # reserved msgpack byte
        b"\x00\x03\x92\x26\x91",  # a container inside a message
    ],
)
def test_broken_relay_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        codec.decode_relay_payload(payload)


def test_a_relay_message_that_does_not_fit_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        codec.encode_relay_payload(RelayExtended(b"x" * RELAY_PAYLOAD_BYTES), RELAY_PAYLOAD_BYTES)


def test_small_relay_messages_share_a_payload_in_order() -> None:
    messages = [RelayBegin(1, "inference"), RelayData(1, b"request"), RelayEnd(1, 0), RelayDrop()]
    (payload,) = codec.pack_relay_payloads(messages, RELAY_PAYLOAD_BYTES)
    assert len(payload) == RELAY_PAYLOAD_BYTES
    assert codec.decode_relay_messages(payload) == messages
    with pytest.raises(RemoteProtocolError, match="expected one relay message"):
        codec.decode_relay_payload(payload)


def test_messages_that_do_not_fit_together_start_a_new_payload() -> None:
    full = RelayData(1, b"x" * RELAY_DATA_BYTES_MAX)
    messages = [RelayData(1, b"a"), full, RelayEnd(1, 0)]
    payloads = codec.pack_relay_payloads(messages, RELAY_PAYLOAD_BYTES)
    assert [codec.decode_relay_messages(p) for p in payloads] == [[messages[0]], [full], [messages[2]]]
    assert codec.pack_relay_payloads([], RELAY_PAYLOAD_BYTES) == []
    with pytest.raises(LocalProtocolError):
        codec.pack_relay_payloads([RelayExtended(b"x" * RELAY_PAYLOAD_BYTES)], RELAY_PAYLOAD_BYTES)


def test_a_broken_second_message_spoils_the_cell() -> None:
    first = codec.encode_relay_payload(RelayDrop(), RELAY_PAYLOAD_BYTES)
    used = 2 + int.from_bytes(first[:2], "big")
    with pytest.raises(RemoteProtocolError, match="exceeds the cell"):
        codec.decode_relay_messages(first[:used] + b"\xff\xff" + bytes(RELAY_PAYLOAD_BYTES - used - 2))
    with pytest.raises(RemoteProtocolError, match="without a message"):
        codec.decode_relay_messages(bytes(RELAY_PAYLOAD_BYTES))


# --- documents ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": True},
        [1, 2.5, None, True, "x", b"raw"],
        "just text",
        {"nested": {"deeper": [[{"a": 1}]]}},
    ],
)
def test_documents_round_trip(document: Any) -> None:
    assert codec.decode_document(codec.encode_document(document)) == document


def _nested(depth: int) -> Any:
    document: Any = 0
    for _ in range(depth - 1):
        document = [document]
    return document


def test_document_depth_limit() -> None:
    assert codec.decode_document(codec.encode_document(_nested(document_scan.DOCUMENT_DEPTH_MAX))) is not None
    with pytest.raises(RemoteProtocolError):
        codec.decode_document(codec.encode_document(_nested(document_scan.DOCUMENT_DEPTH_MAX + 1)))
    with pytest.raises(RemoteProtocolError):
        codec.decode_document(b"\x91" * 100_000 + b"\x00")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"\x81\x01\x02",  # an int map key
        b"\x81\xc4\x01k\x02",  # a bytes map key
        b"\xd6\xff" + bytes(4),  # ext type (timestamp)
        b"\x92\x01",  # truncated
        b"\x01\x02",  # trailing data
        b"\xdd\xff\xff\xff\xff",  # huge array header
    ],
)
def test_malformed_documents_are_refused(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        codec.decode_document(data)


def test_oversized_documents_are_refused_both_ways() -> None:
    with pytest.raises(LocalProtocolError):
        codec.encode_document(b"x" * codec.DOCUMENT_BYTES_MAX)
    with pytest.raises(RemoteProtocolError):
        codec.decode_document(bytes(codec.DOCUMENT_BYTES_MAX + 1))
