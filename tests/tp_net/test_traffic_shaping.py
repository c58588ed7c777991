"""The shaping rules of tp_net.protocol.traffic_shaping, sans-IO: ticks share cells, empty ticks carry one
dummy cell, END follows the real data, padding fills the length bucket; requests fill their cell bucket
exactly."""

from __future__ import annotations

import pytest

from tests.tp_net.circuit_harness import Wire
from tp_net.protocol.cells import RELAY_DATA_BYTES_MAX
from tp_net.protocol.circuit_client import CircuitState
from tp_net.protocol.inference_contract import PAD_FIELD
from tp_net.protocol.messages import REQUEST_BYTES_MAX, MessageReader, encode_request
from tp_net.protocol.streams import CIRCUIT_SENDME_CELLS, STREAM_SENDME_CELLS
from tp_net.protocol.traffic_shaping import (
    PAD_MESSAGE,
    REQUEST_BUCKET_CELLS_MIN,
    RESPONSE_BUCKET_CELLS_MIN,
    ResponseCadence,
    ResponseShaping,
    bucket,
    drop_echoes,
    is_pad,
    pad_request,
)
from tp_node.inference import parse_request


def test_tokens_made_between_ticks_share_one_tick() -> None:
    cadence = ResponseCadence(ResponseShaping())
    for _ in range(5):
        cadence.add(b"t" * 20)
    tick = cadence.tick()
    assert (tick.data, tick.dummy_cells, tick.end_stream) == (b"t" * 100, 0, False)
    assert cadence.cells_sent == 1


def test_an_empty_tick_carries_one_cell_of_padding_that_the_client_drops() -> None:
    cadence = ResponseCadence(ResponseShaping())
    tick = cadence.tick()
    assert (tick.data, tick.dummy_cells) == (PAD_MESSAGE, 0)
    assert len(PAD_MESSAGE) == RELAY_DATA_BYTES_MAX
    (document,) = MessageReader().feed(PAD_MESSAGE)
    assert is_pad(document) and not is_pad({"text": "x"}) and not is_pad({PAD_FIELD: "x", "text": "y"})


@pytest.mark.parametrize(
    ("cell", "echoes"),
    [(1, 0), (STREAM_SENDME_CELLS - 1, 0), (STREAM_SENDME_CELLS, 1), (CIRCUIT_SENDME_CELLS, 2), (96, 1)],
)
def test_the_client_answers_padding_where_data_would_have_drawn_sendmes(cell: int, echoes: int) -> None:
    assert drop_echoes(cell) == echoes


def test_the_stream_ends_after_the_real_data_then_padding_fills_the_bucket() -> None:
    cadence = ResponseCadence(ResponseShaping())
    cadence.add(b"x" * (3 * RELAY_DATA_BYTES_MAX))
    cadence.finish()
    last = cadence.tick()
    assert last.end_stream and len(last.data) == 3 * RELAY_DATA_BYTES_MAX
    ticks = []
    while not cadence.done:
        ticks.append(cadence.tick())
    assert all(t.dummy_cells == 1 and not t.data and not t.end_stream for t in ticks)
    assert 3 + len(ticks) == RESPONSE_BUCKET_CELLS_MIN == cadence.cells_sent
    assert cadence.tick().dummy_cells == 0


def test_without_padding_the_response_stops_at_its_end() -> None:
    cadence = ResponseCadence(ResponseShaping(pad_to_bucket=False))
    cadence.add(b"x")
    cadence.finish()
    assert cadence.tick().end_stream
    assert cadence.done


@pytest.mark.parametrize(("count", "expected"), [(0, 4), (4, 4), (5, 8), (33, 64)])
def test_buckets_double(count: int, expected: int) -> None:
    assert bucket(count, 4) == expected


@pytest.mark.parametrize("chars", [0, 10, 2000, 3900, 5000, 40000])
def test_a_padded_request_fills_its_cell_bucket_exactly_and_the_node_accepts_it(chars: int) -> None:
    document = {"messages": [{"role": "user", "content": "q" * chars}], "max_tokens": 5}
    padded = pad_request(document)
    size = len(encode_request(padded))
    assert size % RELAY_DATA_BYTES_MAX == 0
    cells = size // RELAY_DATA_BYTES_MAX
    assert cells >= REQUEST_BUCKET_CELLS_MIN and cells & (cells - 1) == 0
    assert len(encode_request(document)) <= size
    assert parse_request(padded).messages == parse_request(document).messages


def test_a_pad_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(Exception, match="pad"):
        parse_request({"messages": [{"role": "user", "content": "q"}], PAD_FIELD: 7})


def test_the_largest_requests_pad_to_the_request_limit_and_never_past_it() -> None:
    near = {"messages": [{"role": "user", "content": "q" * 1_030_000}]}
    cells = REQUEST_BYTES_MAX // RELAY_DATA_BYTES_MAX
    assert len(encode_request(pad_request(near))) == cells * RELAY_DATA_BYTES_MAX
    over = {"messages": [{"role": "user", "content": "q" * 1_048_000}]}
    assert pad_request(over) == over


def test_the_client_echoes_the_nodes_padding_only_within_the_nodes_drop_budget() -> None:
    """However much padding a node sends, the client's echoes never cost it the circuit at the node."""
    wire = Wire(71)
    path = wire.add_path(3)
    handle = wire.open_circuit(path)
    handle.circuit.edge.open_stream("inference")  # so that the node hears of the circuit
    wire.run()
    node = wire.hops[path[-1]]
    (ref,) = node.refs()
    for _ in range(40):  # 40 * 64 DROPs would draw 120 echoes, past DROP_CELLS_PER_CIRCUIT_BURST
        for _ in range(CIRCUIT_SENDME_CELLS):
            wire.route(node.name, node.core.send_drop(ref))
        wire.run()
    assert handle.circuit.state is CircuitState.OPEN and handle.closed == []


def test_first_at_once_asks_for_a_tick_when_the_first_real_data_waits_and_never_again() -> None:
    cadence = ResponseCadence(ResponseShaping(first_at_once=True))
    assert not cadence.tick_now
    assert cadence.tick().data == PAD_MESSAGE  # the wait before the first token is padded as before
    cadence.add(b"token")
    assert cadence.tick_now
    assert cadence.tick().data == b"token"
    cadence.add(b"more")
    assert not cadence.tick_now  # later data waits for its tick


def test_by_default_the_first_data_waits_for_its_tick() -> None:
    cadence = ResponseCadence(ResponseShaping())
    cadence.add(b"token")
    assert not cadence.tick_now
