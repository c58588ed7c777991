"""Memory attacks on a GPU node and on a client, run as a stranger would (tests/adversarial/notes-flow.md).

Against a real tp-relay and tp-node on 127.0.0.1 (a stranger builds a circuit through the relay to the node
with the ordinary client library, then sends bytes no honest client sends): the node lives, its RSS grows
less than NODE_RSS_GROWTH_BYTES_MAX, the attacker's stream or circuit is refused, and an honest request made
afterwards is answered. A malicious node's answers to a client run in memory (the client is this process).
"""

from __future__ import annotations

import contextlib
import tracemalloc
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.reliability.proc import rss_bytes
from tp_dev.local_network import LocalNetwork, local_network
from tp_net.protocol.cells import DestroyReason
from tp_net.protocol.circuit_client import HopInfo
from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.protocol.messages import REQUEST_BYTES_MAX
from tp_net.protocol.streams import EndReason
from tp_net.trio.client import RESPONSE_BYTES_MAX, Circuit, CircuitError, ClientLink, Stream, StreamError
from tp_net.trio.services import REQUEST_BUFFER_BYTES_PER_CIRCUIT_MAX
from tp_net.trio.transport_ws import WebSocketDialer
from tp_node.engine import FakeEngine
from tp_node.testing.memory_network import in_process_network

# What an attack may add to the node's resident memory. Without the budgets each attack below costs the
# node several hundred MiB (a MiB of empty maps decodes to ~73 MiB of dicts).
NODE_RSS_GROWTH_BYTES_MAX = 96 * 1024 * 1024
# What a malicious node's answer may cost the client, beyond the bytes of one cell window.
CLIENT_PEAK_BYTES_MAX = 32 * 1024 * 1024
ATTACK_TIMEOUT_S = 120
HONEST_REQUEST = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


def _empty_maps_document(document_bytes: int) -> bytes:
    """An array of empty maps, `document_bytes` long: one byte each, ~80 bytes each once decoded."""
    count = document_bytes - 5
    return b"\xdd" + count.to_bytes(4, "big") + b"\x80" * count


def _message(document: bytes) -> bytes:
    return len(document).to_bytes(4, "big") + document


@asynccontextmanager
async def _node_under_watch(tmp_path: Path) -> AsyncIterator[tuple[LocalNetwork, list[HopInfo], list[int]]]:
    """One relay (the node's home) and the node; yields the path and a list that fills with the node's RSS,
    sampled every 20 ms."""
    async with (
        local_network(tmp_path, relay_count=1, authority_count=1, threshold=1) as network,
        trio.open_nursery() as nursery,
    ):
        pid = network.node.process.pid
        samples = [rss_bytes(pid)]

        async def sample() -> None:
            while True:
                samples.append(rss_bytes(pid))
                await trio.sleep(0.02)

        nursery.start_soon(sample)
        yield network, [network.relay_hop(0), network.node_hop()], samples
        nursery.cancel_scope.cancel()


async def _assert_node_healthy(
    network: LocalNetwork, link: ClientLink, path: list[HopInfo], samples: list[int]
) -> None:
    assert network.node.process.returncode is None, "the node died"
    growth = max(samples) - samples[0]
    print(f"node RSS {samples[0] / 2**20:.0f} MiB, grew by at most {growth / 2**20:.1f} MiB")  # shown with -s
    assert growth < NODE_RSS_GROWTH_BYTES_MAX, f"node RSS grew by {growth / 2**20:.0f} MiB"
    honest = await link.build_circuit(path)
    with trio.fail_after(30):
        answer = [chunk async for chunk in honest.request(INFERENCE_SERVICE, HONEST_REQUEST)]
    assert answer[-1]["finish_reason"] == "length"


async def _wait_closed(circuit: Circuit, timeout_s: float = ATTACK_TIMEOUT_S) -> DestroyReason | None:
    with trio.fail_after(timeout_s):
        while circuit.is_open:
            await circuit.wait_changed()
    return circuit.close_reason


async def _raw_stream(circuit: Circuit, data: bytes, *, end: bool) -> Stream:
    stream = await circuit.open_stream(INFERENCE_SERVICE)
    await stream.send(data)
    if end:
        stream.end()
    return stream


async def test_requests_of_empty_maps_are_held_as_bytes_and_refused_undecoded(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    streams_per_circuit = REQUEST_BUFFER_BYTES_PER_CIRCUIT_MAX // (REQUEST_BYTES_MAX + 4)
    message = _message(_empty_maps_document(REQUEST_BYTES_MAX))
    async with (
        _node_under_watch(tmp_path) as (network, path, samples),
        ClientLink.connect(WebSocketDialer(nursery), path[0]) as link,
    ):
        streams: list[Stream] = []
        with trio.fail_after(ATTACK_TIMEOUT_S):
            for _ in range(2):
                circuit = await link.build_circuit(path)
                # Whole messages, no END yet: the node must hold them without decoding them...
                streams += [
                    await _raw_stream(circuit, message, end=False) for _ in range(streams_per_circuit)
                ]
            # ...one stream more than the circuit's budget is refused...
            extra = await _raw_stream(circuit, message, end=False)
            with pytest.raises(StreamError) as refused:
                await extra.receive_data()
            assert refused.value.reason == EndReason.OVERLOADED
            # ...and each ends in a refusal, not a decoded document.
            for stream in streams:
                stream.end()
            for stream in streams:
                with pytest.raises(StreamError) as bad:
                    await stream.receive_data()
                assert bad.value.reason == EndReason.BAD_REQUEST
        await _assert_node_healthy(network, link, path, samples)


async def test_a_stream_of_many_messages_loses_its_circuit(nursery: trio.Nursery, tmp_path: Path) -> None:
    message = _message(_empty_maps_document(16 * 1024))
    async with (
        _node_under_watch(tmp_path) as (network, path, samples),
        ClientLink.connect(WebSocketDialer(nursery), path[0]) as link,
    ):
        circuit = await link.build_circuit(path)
        # 768 KiB: under the request limit, so only the one-message rule can refuse it.
        with trio.fail_after(ATTACK_TIMEOUT_S), contextlib.suppress(StreamError, CircuitError):
            await _raw_stream(circuit, message * 48, end=False)
        assert await _wait_closed(circuit, 15) is DestroyReason.PROTOCOL
        await _assert_node_healthy(network, link, path, samples)


async def test_a_request_announcing_more_than_the_limit_loses_its_circuit(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with (
        _node_under_watch(tmp_path) as (network, path, samples),
        ClientLink.connect(WebSocketDialer(nursery), path[0]) as link,
    ):
        circuit = await link.build_circuit(path)
        await _raw_stream(circuit, (REQUEST_BYTES_MAX + 1).to_bytes(4, "big") + b"\xa0" * 4096, end=False)
        assert await _wait_closed(circuit, 15) is DestroyReason.PROTOCOL
        await _assert_node_healthy(network, link, path, samples)


# --- a malicious node against a client (the gateway's library), in memory ---------------------------------


class HostileEngine(FakeEngine):
    """Answers with a chunk of `maps` empty maps, or (maps=0) with chunks of text that never end. The chunk
    is built before the client's memory is measured (node and client share this process)."""

    def __init__(self, maps: int) -> None:
        super().__init__()
        self.maps = maps
        self.chunk = {"text": [{} for _ in range(maps)]}

    async def generate(self, request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        if request.get("honest"):
            async for chunk in super().generate(HONEST_REQUEST):
                yield chunk
            return
        if self.maps:
            await trio.lowlevel.checkpoint()
            yield self.chunk
            return
        while True:
            await trio.lowlevel.checkpoint()
            yield {"text": "x" * 60_000}


@pytest.mark.parametrize(
    "maps",
    [REQUEST_BYTES_MAX, pytest.param(0, marks=pytest.mark.slow)],  # 64 MiB through a circuit: ~1 min
    ids=["a chunk of empty maps", "an answer that never ends"],
)
async def test_a_malicious_node_cannot_blow_up_a_client(maps: int) -> None:
    async with in_process_network(relay_count=1, engine=HostileEngine(maps)) as net:
        hops = net.path()
        async with ClientLink.connect(net.network.dialer(), hops[0]) as link:
            circuit = await link.build_circuit(hops)
            received = 0
            tracemalloc.start()
            try:
                with trio.fail_after(ATTACK_TIMEOUT_S), pytest.raises(StreamError) as refused:
                    async for chunk in circuit.request(INFERENCE_SERVICE, {"prompt": "hi"}):
                        received += len(chunk["text"])
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert refused.value.reason == EndReason.BAD_REQUEST
            assert await _wait_closed(circuit) is DestroyReason.PROTOCOL
            assert received <= RESPONSE_BYTES_MAX
            print(f"client peak {peak / 2**20:.1f} MiB")  # shown with -s
            assert peak < CLIENT_PEAK_BYTES_MAX, f"the client peaked at {peak / 2**20:.0f} MiB"
            honest = await link.build_circuit(hops)
            answer = [chunk async for chunk in honest.request(INFERENCE_SERVICE, {"honest": True})]
            assert answer[-1]["finish_reason"] == "length"
