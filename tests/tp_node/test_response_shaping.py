"""A shaping node (tp_net.protocol.traffic_shaping) on the real relay and node code: the client gets exactly
the chunks an unshaped node sends, and is done at the real end while the node's padding goes on; the node's
side of the circuit carries a cell every tick, the padding included."""

from __future__ import annotations

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


async def _ask(shaping: ResponseShaping) -> tuple[list[Any], float, int]:
    """The chunks, when the client was done, and the cells the node sent until its link went quiet."""
    engine = FakeEngine(token_delay_s=TOKEN_DELAY_S)
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
