"""Three tp-relay processes and one tp-node on 127.0.0.1; a client builds a 4-hop circuit and streams."""

from __future__ import annotations

import hashlib
from pathlib import Path

import trio

from tp_dev.local_network import local_network
from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.trio.client import ClientLink
from tp_net.trio.transport_ws import WebSocketDialer
from tp_node.engine import fake_token

CHUNKS = 1000


async def test_client_streams_a_thousand_chunks_through_three_relays_to_a_node(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with local_network(tmp_path) as network:
        path = network.path()
        async with ClientLink.connect(WebSocketDialer(nursery), path[0]) as link:
            circuit = await link.build_circuit(path)
            request = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": CHUNKS}
            received = []
            with trio.fail_after(60):
                async for chunk in circuit.request(INFERENCE_SERVICE, request):
                    received.append(chunk)
        seed = hashlib.blake2b(b"hello", digest_size=8).digest()
        assert [chunk["text"] for chunk in received[:-1]] == [fake_token(seed, i) for i in range(CHUNKS)]
        assert received[-1]["finish_reason"] == "length"
        assert received[-1]["usage"]["completion_tokens"] == CHUNKS
