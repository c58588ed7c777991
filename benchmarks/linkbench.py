"""A link test peer and benchmark, run as separate processes over real WebSockets.

    python -m benchmarks.linkbench serve [--echo]     # prints {"address": ..., "node_id": ...} and serves
    python -m benchmarks.linkbench run --address URL --node-id HEX
        [--handshakes N] [--frames N] [--payload-bytes B]

The payloads are Padding frames whose first 4 bytes number them. The server checks that they arrive in
order, echoes them when asked, and answers a Ping with a Pong whose token is the number received so far.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence

import trio

from tp_crypto.identity import Identity
from tp_net.protocol.errors import LinkClosed, TokenPlaceError
from tp_net.protocol.frames import Frame, Padding, Ping, Pong
from tp_net.protocol.link import CloseReason
from tp_net.trio.link_trio import Link, accept_link, dial_link
from tp_net.trio.transport import Channel
from tp_net.trio.transport_ws import WebSocketDialer, WebSocketListener

SEND_BATCH_FRAMES = 64


SEQUENCE_BYTES = 4


def numbered_padding(index: int, body: bytes) -> Padding:
    return Padding(index.to_bytes(SEQUENCE_BYTES, "big") + body)


def sequence_number(frame: Padding) -> int:
    return int.from_bytes(frame.data[:SEQUENCE_BYTES], "big")


async def serve_links(link: Link, *, echo: bool) -> None:
    """Count in-order cells, echo them if asked, answer Pings with the count so far."""
    received = 0
    while True:
        try:
            frames = await link.receive()
        except LinkClosed:
            return
        replies: list[Frame] = []
        for frame in frames:
            if isinstance(frame, Padding):
                if sequence_number(frame) != received:
                    await link.aclose(CloseReason.PROTOCOL_ERROR)
                    return
                received += 1
                if echo:
                    replies.append(frame)
            elif isinstance(frame, Ping):
                replies.append(Pong(received))
        if replies:
            await link.send(replies)


async def _serve(host: str, port: int, echo: bool) -> None:
    identity = Identity.generate()

    async def handle(channel: Channel) -> None:
        link = await accept_link(channel, identity=identity)
        await serve_links(link, echo=echo)

    async with trio.open_nursery() as nursery:
        address = await nursery.start(WebSocketListener(host, port).serve, handle)
        print(json.dumps({"address": address, "node_id": identity.node_id.hex()}), flush=True)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


async def measure_handshakes(dialer: WebSocketDialer, address: str, node_id: bytes, count: int) -> float:
    """Sequential link handshakes (dial, XX, close) per second."""
    start = time.perf_counter()
    for _ in range(count):
        link = await dial_link(dialer, address, expected_peer_id=node_id, identity=None)
        await link.aclose()
    return count / (time.perf_counter() - start)


async def measure_frames(link: Link, count: int, payload_bytes: int) -> float:
    """One-way cells per second, up to the server's acknowledgement of the last one."""
    body = b"\xa5" * (payload_bytes - SEQUENCE_BYTES)
    start = time.perf_counter()
    for first in range(0, count, SEND_BATCH_FRAMES):
        last = min(first + SEND_BATCH_FRAMES, count)
        await link.send([numbered_padding(i, body) for i in range(first, last)])
    await link.send([Ping(1)])
    while True:
        frames = await link.receive()
        if any(isinstance(f, Pong) and f.token == count for f in frames):
            return count / (time.perf_counter() - start)


async def _run(address: str, node_id: bytes, handshakes: int, frames: int, payload_bytes: int) -> None:
    async with trio.open_nursery() as nursery:
        dialer = WebSocketDialer(nursery)
        result: dict[str, float | int] = {"payload_bytes": payload_bytes}
        if handshakes:
            result["handshakes_per_s"] = await measure_handshakes(dialer, address, node_id, handshakes)
        if frames:
            link = await dial_link(dialer, address, expected_peer_id=node_id)
            result["frames_per_s"] = await measure_frames(link, frames, payload_bytes)
            result["megabytes_per_s"] = result["frames_per_s"] * payload_bytes / 1e6
            await link.aclose()
        print(json.dumps(result), flush=True)
        nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.linkbench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="accept links and count (or echo) cells")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--echo", action="store_true")
    run = commands.add_parser("run", help="measure handshakes/s and frames/s against a server")
    run.add_argument("--address", required=True)
    run.add_argument("--node-id", required=True, type=bytes.fromhex)
    run.add_argument("--handshakes", type=int, default=200)
    run.add_argument("--frames", type=int, default=20000)
    run.add_argument("--payload-bytes", type=int, default=512)
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            trio.run(_serve, args.host, args.port, args.echo)
        else:
            trio.run(_run, args.address, args.node_id, args.handshakes, args.frames, args.payload_bytes)
    except TokenPlaceError as exc:
        print(f"linkbench: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
