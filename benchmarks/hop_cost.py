"""What one hop costs, without the noise of other processes: two measurements in this one process.

    .venv/bin/python -m benchmarks.hop_cost [--messages 5000] [--requests 300]

1. `transport`: CPU microseconds per one-way 1,100-byte message over the WebSocket channel on loopback
   (both ends in this process), against the same bytes with a 4-byte length prefix over a bare trio TCP
   stream: what the WebSocket layer adds to each cell batch at each hop.
2. `overlay`: the real relay and node code on the in-memory transport (tp_net.trio.transport_memory), a warm
   4-hop circuit, 16-token chat requests to the fake engine: time to first token, total time and CPU per
   request with no sockets, no system calls and no other process: the protocol's own cost, a floor for
   the multi-process figures.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio

from benchmarks.stats import summary
from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.trio.client import ClientLink
from tp_net.trio.transport import Channel
from tp_net.trio.transport_ws import WebSocketDialer, WebSocketListener
from tp_node.engine import FakeEngine
from tp_node.testing.memory_network import in_process_network

MESSAGE_BYTES = 1_100
WARMUP_REQUESTS = 30


async def _cpu_per_message(count: int, round_trip: Callable[[], Awaitable[None]]) -> float:
    start = time.process_time()
    for _ in range(count):
        await round_trip()
    return (time.process_time() - start) / count / 2 * 1e6


async def _websocket_pair(nursery: trio.Nursery) -> tuple[Channel, Channel]:
    accepted: list[Channel] = []
    ready = trio.Event()

    async def hold(channel: Channel) -> None:
        accepted.append(channel)
        ready.set()
        await trio.sleep_forever()

    address = await nursery.start(WebSocketListener("127.0.0.1", 0).serve, hold)
    client = await WebSocketDialer().dial(address)
    await ready.wait()
    return client, accepted[0]


async def _tcp_pair(nursery: trio.Nursery) -> tuple[trio.SocketStream, trio.SocketStream]:
    accepted: list[trio.SocketStream] = []
    ready = trio.Event()

    async def hold(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        ready.set()
        await trio.sleep_forever()

    listeners = await nursery.start(partial(trio.serve_tcp, hold, 0, host="127.0.0.1"))
    client = await trio.open_tcp_stream("127.0.0.1", listeners[0].socket.getsockname()[1])
    await ready.wait()
    return client, accepted[0]


async def _receive_framed(stream: trio.SocketStream) -> bytes:
    buffer = b""
    while len(buffer) < 4 or len(buffer) < 4 + int.from_bytes(buffer[:4], "big"):
        buffer += await stream.receive_some(65536)
    return buffer[4:]


async def transport_cost(count: int) -> list[dict[str, Any]]:
    message = b"\xa5" * MESSAGE_BYTES
    framed = len(message).to_bytes(4, "big") + message
    async with trio.open_nursery() as nursery:
        ws_client, ws_server = await _websocket_pair(nursery)
        tcp_client, tcp_server = await _tcp_pair(nursery)

        async def ws_round_trip() -> None:
            await ws_client.send_message(message)
            await ws_server.send_message(await ws_server.receive_message())
            await ws_client.receive_message()

        async def tcp_round_trip() -> None:
            await tcp_client.send_all(framed)
            await _receive_framed(tcp_server)
            await tcp_server.send_all(framed)
            await _receive_framed(tcp_client)

        ws_us, tcp_us = [], []
        for _ in range(5):  # interleaved A/B rounds
            ws_us.append(await _cpu_per_message(count // 5, ws_round_trip))
            tcp_us.append(await _cpu_per_message(count // 5, tcp_round_trip))
        nursery.cancel_scope.cancel()
    return [
        summary("CPU per one-way message, WebSocket channel", "us", ws_us),
        summary("CPU per one-way message, length-prefixed TCP", "us", tcp_us),
    ]


async def overlay_cost(requests: int) -> list[dict[str, Any]]:
    request = {"kind": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
    first, total, cpu = [], [], []
    async with in_process_network(engine=FakeEngine()) as net:
        hops = net.path()
        async with ClientLink.connect(net.network.dialer(), hops[0]) as link:
            circuit = await link.build_circuit(hops)
            for index in range(WARMUP_REQUESTS + requests):
                started, cpu_started, first_at = time.perf_counter(), time.process_time(), 0.0
                async for chunk in circuit.request(INFERENCE_SERVICE, request):
                    if not first_at and "text" in chunk:
                        first_at = time.perf_counter()
                if index >= WARMUP_REQUESTS:
                    first.append((first_at - started) * 1000)
                    total.append((time.perf_counter() - started) * 1000)
                    cpu.append((time.process_time() - cpu_started) * 1000)
    return [
        summary("in-memory 4-hop request: time to first token", "ms", first),
        summary("in-memory 4-hop request: total, 16 tokens", "ms", total),
        summary("in-memory 4-hop request: CPU, all hops", "ms", cpu),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hop_cost", description=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    for result in trio.run(transport_cost, args.messages) + trio.run(overlay_cost, args.requests):
        print(json.dumps(result))


if __name__ == "__main__":
    main()
