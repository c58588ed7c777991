"""A node given the wrong --home-relay id hears which id answered at that address, and how to fix it."""

from __future__ import annotations

import logging
import random

import pytest
import trio

from tests.tp_net.directory_factories import identity
from tp_net.trio.transport_memory import MemoryNetwork
from tp_node.engine import FakeEngine
from tp_node.gpu_node import GpuNode, HomeRelay
from tp_node.relay import Relay

ADDRESS = "ws://127.0.0.1:7011/"


async def test_a_wrong_home_relay_id_names_the_id_that_answered(caplog: pytest.LogCaptureFixture) -> None:
    network = MemoryNetwork()
    relay_identity, wrong, node_identity = identity(1), identity(2), identity(3)
    relay = Relay(relay_identity, [bytes(32)], dialer=network.dialer(), rng=random.Random(1))
    node = GpuNode(
        node_identity,
        [bytes(32)],
        home_relays=[HomeRelay(wrong.node_id, ADDRESS)],
        engine=FakeEngine(),
        dialer=network.dialer(),
        rng=random.Random(2),
    )
    with caplog.at_level(logging.INFO, logger="tp_node.gpu_node"):
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.serve, network.listener(ADDRESS))
            nursery.start_soon(node.run)
            with trio.move_on_after(5):
                while not any("fix --home-relay" in r.getMessage() for r in caplog.records):
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    warning = next(r.getMessage() for r in caplog.records if "fix --home-relay" in r.getMessage())
    assert relay_identity.node_id.hex() in warning and wrong.node_id.hex() in warning
    assert ADDRESS in warning and "unreachable" not in warning
