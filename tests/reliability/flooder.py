"""A hostile client, run as its own process by the flood test: floods one relay as fast as it can.

    python -m tests.reliability.flooder --address ws://127.0.0.1:PORT/ --node-id HEX --seconds S

Attacks run at once, each in a loop until the time is up: CREATE cells on one link (far beyond its rate
limit), circuits opening streams and sending directory requests, WebSocket messages above the size limit,
junk bytes instead of a handshake, junk after a completed handshake, and text messages. It prints one JSON
line when it starts, one ({"ready": ...}) once every attack has got somewhere, and one with its counters
when it ends (after S seconds, or at once on SIGTERM; exit 0).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable

import trio
import trio_websocket

from tp_crypto.errors import TokenPlaceError
from tp_crypto.identity import node_id_to_x25519
from tp_crypto.onion import HopHandshakeClient, HopKey
from tp_net.protocol.cells import CellCommand, DestroyReason, destroy_cell, handshake_cell, new_circuit_id
from tp_net.protocol.circuit_client import HopInfo
from tp_net.protocol.frames import CELL_BODY_BYTES, Cell, Frame, Padding, Ping
from tp_net.protocol.link import LinkHandshake
from tp_net.protocol.rate_limits import CLIENT_CREATE_BURST, CLIENT_CREATE_RATE_PER_S
from tp_net.trio.client import ClientLink
from tp_net.trio.link_trio import Link, dial_link
from tp_net.trio.transport import CHANNEL_MESSAGE_BYTES_MAX
from tp_net.trio.transport_ws import WebSocketDialer, parse_ws_address

CREATES_PER_SEND = 256
FRAMES_PER_SEND = 256
STREAM_REQUESTERS = 4
ATTACK_TIMEOUT_S = 5.0
FLOOD_ERRORS = (TokenPlaceError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed, OSError)
FLOOD_ERRORS_WITH_TIMEOUT = (*FLOOD_ERRORS, trio.TooSlowError)

Attack = Callable[["Flood"], Awaitable[None]]


class Flood:
    def __init__(self, address: str, node_id: bytes, nursery: trio.Nursery) -> None:
        self.address = address
        self.hop = HopInfo(node_id, None, address)  # the identity handshake: no directory needed
        self.dialer = WebSocketDialer(nursery)
        self.rng = random.Random(7)
        self.counts: Counter[str] = Counter()

    async def repeat(self, name: str, attack: Attack) -> None:
        while True:
            try:
                with trio.fail_after(ATTACK_TIMEOUT_S):
                    await attack(self)
                self.counts[name] += 1
            except Exception as exc:
                if not _expected(exc):
                    raise
                self.counts[f"{name} ended: {_leaf(exc).__class__.__name__}"] += 1
            await trio.lowlevel.checkpoint()


def _expected(exc: BaseException) -> bool:
    """What the relay may do to a flooder: close, refuse, time out (inside nurseries: exception groups)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_expected(inner) for inner in exc.exceptions)
    return isinstance(exc, FLOOD_ERRORS_WITH_TIMEOUT)


def _leaf(exc: BaseException) -> BaseException:
    return _leaf(exc.exceptions[0]) if isinstance(exc, BaseExceptionGroup) else exc


async def create_flood(flood: Flood) -> None:
    """One link, CREATE cells as fast as the link takes them; whatever comes back is drained. At the end,
    the link's answers are held against the relay's per-link CREATE limit over the link's lifetime (from
    before the dial, so an upper bound of the relay's)."""
    started = trio.current_time()
    link = await dial_link(flood.dialer, flood.address, expected_peer_id=flood.hop.node_id)
    flood.counts["create links"] += 1
    tally: Counter[str] = Counter()
    # One valid first message, reused: the relay runs its side of the handshake for each CREATE it takes.
    hop_public = node_id_to_x25519(flood.hop.node_id)
    message = HopHandshakeClient(hop_public, key=HopKey.IDENTITY).first_message()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_drain_creates, link, flood, tally)
        try:
            for _ in range(64):
                in_use: set[int] = set()
                cells = [
                    handshake_cell(_fresh_id(flood.rng, in_use), CellCommand.CREATE, message)
                    for _ in range(CREATES_PER_SEND)
                ]
                await link.send(cells)
                flood.counts["creates sent"] += len(cells)
        finally:
            nursery.cancel_scope.cancel()
            _hold_to_link_limit(flood, tally, trio.current_time() - started)
            await link.aclose()


async def _drain_creates(link: Link, flood: Flood, tally: Counter[str]) -> None:
    while True:
        for frame in await link.receive():
            answer = (
                "answered" if isinstance(frame, Cell) and frame.command == CellCommand.CREATED else "refused"
            )
            tally[answer] += 1
            flood.counts[f"creates {answer}"] += 1


def _hold_to_link_limit(flood: Flood, tally: Counter[str], lifetime_s: float) -> None:
    """Count CREATEs answered beyond what the per-link limit allows in the link's lifetime (must stay 0), and
    links whose CREATEs were handled faster than that limit (on those, the limit had to refuse some). A
    loaded relay may handle fewer than the limit allows: then the limit need not refuse any."""
    allowed = CLIENT_CREATE_BURST + CLIENT_CREATE_RATE_PER_S * lifetime_s
    flood.counts["creates beyond the link limit"] += max(0, math.ceil(tally["answered"] - allowed))
    if tally["answered"] + tally["refused"] > allowed:
        flood.counts["create links pressed past the limit"] += 1


def _fresh_id(rng: random.Random, in_use: set[int]) -> int:
    circuit_id = new_circuit_id(rng, link_dialer=True, in_use=in_use)
    in_use.add(circuit_id)
    return circuit_id


async def _drain(link: Link, flood: Flood, answered: str, other: str) -> None:
    """Read whatever comes back, counting CREATED cells as `answered` and other frames as `other`."""
    while True:
        for frame in await link.receive():
            created = isinstance(frame, Cell) and frame.command == CellCommand.CREATED
            flood.counts[answered if created else other] += 1


async def frame_flood(flood: Flood) -> None:
    """Well-sealed but useless frames as fast as the link takes them: pings (each asks for a pong), padding,
    cells for circuits that do not exist, and DESTROYs for them."""
    link = await dial_link(flood.dialer, flood.address, expected_peer_id=flood.hop.node_id)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_drain, link, flood, "circuits created by junk", "frames back")
        try:
            for _ in range(256):
                frames = [_junk_frame(flood.rng) for _ in range(FRAMES_PER_SEND)]
                await link.send(frames)
                flood.counts["junk frames sent"] += len(frames)
        finally:
            nursery.cancel_scope.cancel()
            await link.aclose()


def _junk_frame(rng: random.Random) -> Frame:
    kind = rng.randrange(4)
    circuit_id = new_circuit_id(rng, link_dialer=True, in_use=())
    if kind == 0:
        return Ping(rng.getrandbits(64))
    if kind == 1:
        return Padding(rng.randbytes(rng.randrange(1, 1000)))
    if kind == 2:
        return Cell(circuit_id, CellCommand.RELAY, rng.randbytes(CELL_BODY_BYTES))
    return destroy_cell(circuit_id, DestroyReason.PROTOCOL)


async def stream_flood(flood: Flood) -> None:
    """A one-hop circuit to the relay, its directory service asked again and again by several tasks."""
    async with ClientLink.connect(flood.dialer, flood.hop) as link:
        circuit = await link.build_circuit([flood.hop])

        async def ask() -> None:
            for _ in range(50):
                async for _message in circuit.request("directory", {"op": "get"}):
                    flood.counts["directory answers"] += 1

        async with trio.open_nursery() as nursery:
            for _ in range(STREAM_REQUESTERS):
                nursery.start_soon(ask)


async def begin_flood(flood: Flood) -> None:
    """Streams opened and never used, until the circuit refuses more."""
    async with ClientLink.connect(flood.dialer, flood.hop) as link:
        circuit = await link.build_circuit([flood.hop])
        for _ in range(2000):
            await circuit.open_stream("no such service")
            flood.counts["streams opened"] += 1


async def _raw(flood: Flood, messages: list[bytes | str]) -> None:
    host, port, resource = parse_ws_address(flood.address)
    async with trio_websocket.open_websocket(host, port, resource, use_ssl=False) as ws:
        for message in messages:
            await ws.send_message(message)
        await ws.get_message()  # the relay closes the connection: this raises


async def oversized_messages(flood: Flood) -> None:
    await _raw(flood, [bytes(CHANNEL_MESSAGE_BYTES_MAX + 1)])


async def junk_handshakes(flood: Flood) -> None:
    await _raw(flood, [flood.rng.randbytes(flood.rng.randrange(1, 4096)) for _ in range(3)])


async def text_messages(flood: Flood) -> None:
    await _raw(flood, ["hello"])


async def junk_after_handshake(flood: Flood) -> None:
    """A real handshake, then messages that are not sealed with the link's keys."""
    channel = await flood.dialer.dial(flood.address)
    try:
        handshake = LinkHandshake(dialer=True, identity=None, expected_peer_id=flood.hop.node_id)
        await channel.send_message(handshake.first_message())
        reply = handshake.receive(await channel.receive_message())
        assert reply is not None
        await channel.send_message(reply)
        await channel.send_message(flood.rng.randbytes(1035))
        await channel.receive_message()  # the relay's goodbye, then the close
        await channel.receive_message()
    finally:
        await channel.aclose()


ATTACKS: dict[str, Attack] = {
    "create flood": create_flood,
    "frame flood": frame_flood,
    "stream flood": stream_flood,
    "begin flood": begin_flood,
    "oversized messages": oversized_messages,
    "junk handshakes": junk_handshakes,
    "text messages": text_messages,
    "junk after handshake": junk_after_handshake,
}


# Per attack, the count that shows it got going: the "ready" line waits for all of them, and the test
# measures only then, however loaded the machine.
READY_COUNTS = {
    "create flood": "creates sent",
    "stream flood": "directory answers",
    "begin flood": "streams opened",
    "frame flood": "junk frames sent",
}
READY_POLL_S = 0.05


async def run(address: str, node_id: bytes, seconds: float, attacks: list[str]) -> Counter[str]:
    async with trio.open_nursery() as nursery:
        flood = Flood(address, node_id, nursery)
        with trio.move_on_after(seconds):
            async with trio.open_nursery() as running:
                # SIGTERM is handled from before the announcement on: a stop never kills it silently.
                await running.start(_stop_on_sigterm, flood)
                for name in attacks:
                    running.start_soon(flood.repeat, name, ATTACKS[name])
                running.start_soon(_announce_ready, flood, attacks)
                print(json.dumps({"flooding": address}), flush=True)
        nursery.cancel_scope.cancel()
    return flood.counts


async def _announce_ready(flood: Flood, attacks: list[str]) -> None:
    wanted = [count for attack, count in READY_COUNTS.items() if attack in attacks]
    while not all(flood.counts[count] for count in wanted):
        await trio.sleep(READY_POLL_S)
    print(json.dumps({"ready": dict(flood.counts)}), flush=True)


async def _stop_on_sigterm(
    flood: Flood, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """On SIGTERM: the counters, then exit at once. Closing politely could take long: the relay, busy with
    the flood, reads slowly, and every link would wait for its goodbye to go out."""
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            _report(flood.counts)
            os._exit(0)


def _report(counts: Counter[str]) -> None:
    print(json.dumps(dict(counts)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--attack", action="append", choices=sorted(ATTACKS), help="(default: all)")
    args = parser.parse_args()
    attacks = args.attack or sorted(ATTACKS)
    _report(trio.run(run, args.address, bytes.fromhex(args.node_id), args.seconds, attacks))
    sys.exit(0)


if __name__ == "__main__":
    main()
