"""A service handler that fails with an unexpected exception costs its client an internal_error answer,
never the relay (found by the directory-service fuzzer: one bad request ended an authority's process)."""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator
from typing import Any

import pytest
import trio

from tp_crypto.identity import Identity
from tp_net.trio.client import ClientLink
from tp_net.trio.transport_memory import MemoryNetwork
from tp_node.relay import Relay
from tp_node.testing.memory_network import in_process_network


async def broken(request: Any) -> AsyncGenerator[dict[str, Any], None]:
    await trio.lowlevel.checkpoint()
    if request.get("fail"):
        raise ValueError("a bug in a handler")
    yield {"ok": True}


def relay_with_a_broken_service(
    index: int, identity: Identity, onion_keys: list[bytes], net: MemoryNetwork, rng: random.Random
) -> Relay:
    return Relay(identity, onion_keys, dialer=net.dialer(), rng=rng, services={"broken": broken})


async def test_a_failing_handler_answers_internal_error_and_the_relay_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with in_process_network(make_relay=relay_with_a_broken_service) as net:
        guard = net.relay_hops[0]
        async with ClientLink.connect(net.network.dialer(), guard) as link:
            circuit = await link.build_circuit([guard])
            failed = [m async for m in circuit.request("broken", {"fail": True, "secret": "s3cr3t"})]
            served = [m async for m in circuit.request("broken", {})]
    assert failed == [{"error": {"code": "internal_error", "message": "the service failed"}}]
    assert served == [{"ok": True}]
    assert "ValueError" in caplog.text and "a bug in a handler" not in caplog.text
