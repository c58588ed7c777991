"""A shaping node (tp_net.protocol.traffic_shaping) on the real relay and node code: the client gets exactly
the chunks an unshaped node sends, and is done at the real end while the node's padding goes on; the node's
side of the circuit carries a cell every tick, the padding included."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import trio

from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.protocol.traffic_shaping import (
    RESPONSE_BUCKET_CELLS_MIN,
    RESPONSE_SHAPING_DEFAULT,
    RESPONSE_SHAPING_OFF,
    RESPONSE_TICK_S,
    ResponseShaping,
    pad_request,
)
from tp_net.trio.client import Circuit, ClientLink
from tp_net.trio.services import PADDING_RESPONSES_PER_CIRCUIT_MAX
from tp_node.engine import FakeEngine
from tp_node.testing.memory_network import in_process_network

TOKEN_DELAY_S = 2.5 * RESPONSE_TICK_S  # slower than the cadence: most ticks carry padding
REQUEST = {"messages": [{"role": "user", "content": "tell me"}], "max_tokens": 6}


async def _ask(
    shaping: ResponseShaping, token_delay_s: float = TOKEN_DELAY_S
) -> tuple[list[Any], float, int]:
    """The chunks, when the client was done, and the cells the node sent until its link went quiet."""
    engine = FakeEngine(token_delay_s=token_delay_s)
    async with (
        in_process_network(engine=engine, shaping=shaping) as net,
        ClientLink.connect(net.network.dialer(), net.path()[0]) as link,
    ):
        circuit = await link.build_circuit(net.path())
        started = trio.current_time()
        sent_before = net.node.cells_sent
        chunks = [c async for c in circuit.request(INFERENCE_SERVICE, pad_request(REQUEST))]
        done_s = trio.current_time() - started
        await trio.sleep(2 * RESPONSE_BUCKET_CELLS_MIN * RESPONSE_TICK_S)
        return chunks, done_s, net.node.cells_sent - sent_before


async def test_the_client_gets_the_same_chunks_and_is_done_at_the_real_end(
    autojump_clock: trio.abc.Clock,
) -> None:
    plain, plain_s, plain_cells = await _ask(RESPONSE_SHAPING_OFF)
    shaped, shaped_s, shaped_cells = await _ask(RESPONSE_SHAPING_DEFAULT)
    assert shaped == plain and any("text" in chunk for chunk in shaped)
    assert plain_s <= shaped_s <= plain_s + RESPONSE_TICK_S + 0.01  # at most one tick late
    assert plain_cells < 12 and RESPONSE_BUCKET_CELLS_MIN <= shaped_cells <= RESPONSE_BUCKET_CELLS_MIN + 4


async def test_padding_stops_with_the_circuit_and_at_most_a_few_responses_pad_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with (
        in_process_network(engine=FakeEngine(), shaping=RESPONSE_SHAPING_DEFAULT) as net,
        ClientLink.connect(net.network.dialer(), net.path()[0]) as link,
    ):
        circuit = await link.build_circuit(net.path())
        async with trio.open_nursery() as nursery:
            for _ in range(PADDING_RESPONSES_PER_CIRCUIT_MAX + 3):
                nursery.start_soon(_drain, circuit)
        services = net.node.services
        await trio.sleep(RESPONSE_TICK_S)
        assert not services._requests  # each request was forgotten at its END
        assert list(services._padding.values()) == [PADDING_RESPONSES_PER_CIRCUIT_MAX]
        circuit.destroy()
        await trio.sleep(2 * RESPONSE_TICK_S)
        assert not services._padding
        sent = net.node.cells_sent
        await trio.sleep(10 * RESPONSE_TICK_S)
        assert net.node.cells_sent == sent


async def _drain(circuit: Circuit) -> None:
    async for _ in circuit.request(INFERENCE_SERVICE, REQUEST):
        pass


async def _first_token_and_cell_times(shaping: ResponseShaping) -> tuple[float, list[float]]:
    """When the first text chunk came (from the request), and when the node's cells left (from the
    request)."""
    engine = FakeEngine(token_delay_s=FIRST_TOKEN_DELAY_S)
    async with (
        in_process_network(engine=engine, shaping=shaping) as net,
        ClientLink.connect(net.network.dialer(), net.path()[0]) as link,
    ):
        circuit = await link.build_circuit(net.path())
        cell_times: list[float] = []
        sent = net.node.cells_sent

        async def watch() -> None:
            nonlocal sent
            while True:
                await trio.sleep(0.001)
                if net.node.cells_sent != sent:
                    sent = net.node.cells_sent
                    cell_times.append(trio.current_time() - started)

        started = trio.current_time()
        first = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            async for chunk in circuit.request(INFERENCE_SERVICE, pad_request(REQUEST)):
                if first is None and "text" in chunk:
                    first = trio.current_time() - started
            nursery.cancel_scope.cancel()
        assert first is not None
        return first, cell_times


FIRST_TOKEN_DELAY_S = 0.37 * RESPONSE_TICK_S


async def test_first_at_once_sends_the_first_token_at_once_and_counts_the_ticks_from_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    waited, _ = await _first_token_and_cell_times(RESPONSE_SHAPING_DEFAULT)
    first, cells = await _first_token_and_cell_times(replace(RESPONSE_SHAPING_DEFAULT, first_at_once=True))
    assert waited >= RESPONSE_TICK_S > first + 0.5 * RESPONSE_TICK_S  # the default waits for the tick
    assert first < FIRST_TOKEN_DELAY_S + 0.01
    # Every later cell leaves a whole number of ticks after the first token's (the cadence starts from it).
    later = [t - cells[0] for t in cells[1:]]
    assert later and all(abs(t / RESPONSE_TICK_S - round(t / RESPONSE_TICK_S)) < 0.03 for t in later)
