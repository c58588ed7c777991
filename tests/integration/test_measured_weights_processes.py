"""Real authorities measure the relays and the GPU node of their network and sign measured weights."""

from __future__ import annotations

import time
from pathlib import Path

import trio

from tests.integration.test_directory_processes import wait_for_directory
from tp_dev.local_network import local_network
from tp_net.protocol.bandwidth_weights import (
    NODE_WEIGHT_UNMEASURED_TOKENS_PER_S,
    RELAY_WEIGHT_UNMEASURED_KBPS,
)
from tp_net.protocol.directory import Directory
from tp_net.trio.transport_ws import WebSocketDialer

MEASURED_TIMEOUT_S = 90


def _measured(directory: Directory) -> bool:
    relays = [directory.weights.get(r, 0) for r in directory.relays]
    nodes = [directory.weights.get(n, 0) for n in directory.nodes]
    return (
        bool(nodes)
        and all(w > NODE_WEIGHT_UNMEASURED_TOKENS_PER_S for w in nodes)
        and any(w != RELAY_WEIGHT_UNMEASURED_KBPS for w in relays)
    )


async def test_documents_carry_measured_weights(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with local_network(tmp_path, relay_count=4, authority_count=3, threshold=2) as network:
        dialer = WebSocketDialer(nursery)
        deadline = time.monotonic() + MEASURED_TIMEOUT_S
        directory = await wait_for_directory(network, dialer, relays=4)
        while not _measured(directory):
            assert time.monotonic() < deadline, f"no measured weights in time: {directory.weights}"
            await trio.sleep(1)
            directory = await wait_for_directory(network, dialer, relays=4, newer_than=directory.valid_after)
