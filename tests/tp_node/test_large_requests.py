"""Large requests through a real circuit (in memory): relays, a GPU node, flow control both ways.

A request spans many windows of cells; every size up to the request limit must arrive whole, and the node's
answers (a fake engine echoing the byte count, the tiny model's context error) must come back.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import Any

import pytest
import trio

from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.protocol.messages import REQUEST_BYTES_MAX, encode_message
from tp_net.trio.client import ClientLink
from tp_node.engine import FakeEngine
from tp_node.llama_engine import ModelConfig, open_llama_engine
from tp_node.testing.memory_network import in_process_network

SIZES = [100_000, 1_000_000, REQUEST_BYTES_MAX]


class ByteCountEngine(FakeEngine):
    """Answers every request with the number of UTF-8 bytes of its prompt."""

    async def generate(self, request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        await trio.lowlevel.checkpoint()
        yield {"text": str(len(request["prompt"].encode()))}


def _request_of_encoded_size(size: int, **fields: Any) -> dict[str, Any]:
    """A completion request whose document is exactly `size` bytes once encoded."""
    request: dict[str, Any] = {"kind": "completion", **fields, "prompt": ""}
    overhead = len(encode_message(request)) - 4
    request["prompt"] = "a" * (size - overhead - 4)  # a str32 header is 4 bytes longer than a fixstr
    return request


async def _ask(net: Any, request: dict[str, Any]) -> list[Any]:
    hops = net.path()
    async with ClientLink.connect(net.network.dialer(), hops[0]) as link:
        circuit = await link.build_circuit(hops)
        with trio.fail_after(60):
            return [chunk async for chunk in circuit.request(INFERENCE_SERVICE, request)]


@pytest.mark.parametrize("size", SIZES)
async def test_a_large_request_reaches_the_node_whole(size: int) -> None:
    request = _request_of_encoded_size(size)
    assert len(encode_message(request)) - 4 == size
    async with in_process_network(engine=ByteCountEngine()) as net:
        chunks = await _ask(net, request)
    assert chunks == [{"text": str(len(request["prompt"]))}]


@pytest.mark.parametrize("size", SIZES)
async def test_the_tiny_model_refuses_an_over_long_prompt_at_any_size(
    tiny_model_path: Path, size: int
) -> None:
    request = _request_of_encoded_size(size, model="tiny-llama-v1")
    async with (
        open_llama_engine([ModelConfig(tiny_model_path, n_ctx=512)]) as engine,
        in_process_network(engine=engine) as net,
    ):
        chunks = await _ask(net, request)
    assert chunks[-1]["error"]["code"] == "context_length_exceeded"
