"""Whatever a relay's dial for an EXTEND raises costs only the circuits waiting for it (issue 15, item 1:
an IDNA UnicodeError escaped Relay._dial and ended the relay's process). In memory: the exception comes
from a fake dialer, which is the honest scope for "any exception a transport library may raise"."""

from __future__ import annotations

import logging
import random

import pytest
import trio

from tp_crypto.identity import Identity
from tp_net.cells import DestroyReason
from tp_net.client import ClientLink
from tp_net.relay_messages import RelayExtend
from tp_net.transport import Channel, Dialer
from tp_net.transport_memory import MemoryNetwork
from tp_node.relay import Relay
from tp_node.testing.memory_network import in_process_network

EXPLODING = "mem://explode"


class ExplodingDialer:
    def __init__(self, inner: Dialer) -> None:
        self._inner = inner

    async def dial(self, address: str) -> Channel:
        if address == EXPLODING:
            await trio.lowlevel.checkpoint()
            raise UnicodeError("encoding with 'idna' codec failed")
        return await self._inner.dial(address)


def relay_with_an_exploding_dialer(
    index: int, identity: Identity, onion_keys: list[bytes], net: MemoryNetwork, rng: random.Random
) -> Relay:
    return Relay(identity, onion_keys, dialer=ExplodingDialer(net.dialer()), rng=rng)


async def test_a_dial_that_raises_anything_costs_one_circuit_and_the_relay_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tp_node.relay")
    async with in_process_network(make_relay=relay_with_an_exploding_dialer) as net:
        guard = net.relay_hops[0]
        async with ClientLink.connect(net.network.dialer(), guard) as link:
            circuit = await link.build_circuit([guard])
            extend = RelayExtend(b"x" * 32, EXPLODING, net.relay_hops[1].handshake().first_message())
            link.send_cells([circuit.core._relay_to(0, extend, early=True)])
            with trio.fail_after(10):
                while circuit.close_reason is None:
                    await trio.sleep(0.01)
            assert circuit.close_reason is DestroyReason.CONNECT_FAILED
            honest = await link.build_circuit(net.path())
            assert honest.is_open
    assert "UnicodeError" in caplog.text and "idna" not in caplog.text
