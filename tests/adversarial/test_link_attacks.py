"""Link-level attacks on a real tp-relay process over real sockets on 127.0.0.1, run as a stranger would
(no key, no directory listing; only the relay's address and node id). Each test asserts the defence: the
relay lives, its memory and fds stay within a named bound, an honest client's circuit still works, and the
attacker is refused. Attacks, defences and tests: tests/adversarial/notes-link.md.
"""

from __future__ import annotations

import random
import secrets
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import pytest
import trio

from bootstrap.new_network import BOOTSTRAP_FILE_NAME, create_network
from tests.reliability import proc
from tp_crypto.identity import Identity, node_id_to_x25519
from tp_crypto.onion import HopHandshakeClient, HopKey
from tp_dev.local_network import free_ports
from tp_dev.processes import StartedProcess, python_process
from tp_net.protocol import rate_limits
from tp_net.protocol.cells import CellCommand, DestroyReason, destroy_reason, handshake_cell, new_circuit_id
from tp_net.protocol.circuit_client import HopInfo
from tp_net.protocol.errors import LinkClosed
from tp_net.protocol.frames import Cell, Ping
from tp_net.protocol.link import CloseReason
from tp_net.protocol.link_limits import LINKS_PER_ADDRESS_MAX
from tp_net.trio.client import ClientLink
from tp_net.trio.link_trio import Link, dial_link
from tp_net.trio.transport_ws import WebSocketDialer, parse_ws_address

PERIOD_S = 4
DOCUMENT_WAIT_S = 30.0
HONEST_REQUEST_TIMEOUT_S = 20.0
# Ping flood: far more Pings than a relay should ever owe Pongs for (273,920 queued Pongs grew a relay by
# 23 MiB before the defence), against a bound a relay that queues them cannot stay within.
PINGS = 500_000
PINGS_PER_SEND = 5_000
PING_FLOOD_RSS_GROWTH_MAX_BYTES = 16 * 1024 * 1024
# CREATE flood: links with freshly generated node ids, all at once, each sending a client's whole burst.
FRESH_ID_LINKS = 16
CREATES_PER_LINK = rate_limits.CLIENT_CREATE_BURST
# Connection flood: raw TCP connections from one address (127.0.0.2) beyond its cap, held open.
FLOOD_CONNECTIONS = LINKS_PER_ADDRESS_MAX + 64
FLOOD_SOURCE = "127.0.0.2"
FD_SLACK = 16
# Idle links: a short timeout so the test is fast.
IDLE_TIMEOUT_S = 2.0


@asynccontextmanager
async def lone_relay(tmp_path: Path, *extra_args: str) -> AsyncIterator[StartedProcess]:
    """One tp-relay process, the only authority of a new local network, with `extra_args`."""
    (port,) = free_ports(1)
    address = f"ws://127.0.0.1:{port}/"
    network_dir = tmp_path / "network"
    create_network(network_dir, f"adv-{secrets.token_hex(4)}", [address], 1, period_s=PERIOD_S, local=True)
    args = ["tp_node.relay_cli", "--listen", f"127.0.0.1:{port}", "--authority"]
    args += [
        "--data-dir",
        str(network_dir / "authority-1"),
        "--bootstrap",
        str(network_dir / BOOTSTRAP_FILE_NAME),
    ]
    args += ["--log-level", "warning", *extra_args]
    async with python_process(args) as relay:
        yield relay


def hop_of(relay: StartedProcess) -> HopInfo:
    """The relay as a one-hop circuit's hop: its identity key answers (no directory needed)."""
    return HopInfo(bytes.fromhex(relay.announcement["node_id"]), None, relay.announcement["address"])


async def honest_request(dialer: WebSocketDialer, hop: HopInfo) -> dict[str, object]:
    """A new link, a one-hop circuit and one directory request: the relay's answer."""
    with trio.fail_after(HONEST_REQUEST_TIMEOUT_S):
        async with ClientLink.connect(dialer, hop) as link:
            circuit = await link.build_circuit([hop])
            answers = [message async for message in circuit.request("directory", {"op": "get"})]
    assert answers and isinstance(answers[0], dict), answers
    return answers[0]


async def wait_for_document(dialer: WebSocketDialer, hop: HopInfo) -> None:
    """Until the relay serves a directory document (its first one takes a period or two)."""
    with trio.fail_after(DOCUMENT_WAIT_S):
        while "document" not in await honest_request(dialer, hop):
            await trio.sleep(0.5)


async def test_ping_flood_without_reading_keeps_the_relay_small(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with lone_relay(tmp_path) as relay:
        dialer = WebSocketDialer(nursery)
        hop = hop_of(relay)
        await wait_for_document(dialer, hop)
        rss_before = proc.rss_bytes(relay.process.pid)
        attacker = await dial_link(dialer, hop.address or "", expected_peer_id=hop.node_id)
        started = time.monotonic()
        for first in range(0, PINGS, PINGS_PER_SEND):  # never reading a Pong
            await attacker.send([Ping(token) for token in range(first, first + PINGS_PER_SEND)])
        # The relay has read them all once an honest request behind them on another link is answered.
        assert "document" in await honest_request(dialer, hop)
        growth = proc.rss_bytes(relay.process.pid) - rss_before
        print(
            f"{PINGS} pings in {time.monotonic() - started:.1f} s; relay rss growth {growth / 2**20:.1f} MiB"
        )
        assert growth <= PING_FLOOD_RSS_GROWTH_MAX_BYTES, growth
        # The attacker's own link still works: it is owed the latest Pong.
        with trio.fail_after(HONEST_REQUEST_TIMEOUT_S):
            tokens = []
            while PINGS - 1 not in tokens:
                tokens += [getattr(frame, "token", None) for frame in await attacker.receive()]
        assert len(tokens) < PINGS // 100, len(tokens)
        await attacker.aclose()
        assert relay.process.returncode is None


async def _creates_answered(link: Link, count: int, rng_seed: int) -> tuple[int, int]:
    """Send `count` CREATEs (one valid identity handshake, reused) and read every answer: (created,
    refused for the rate limit)."""
    rng = random.Random(rng_seed)
    assert link.peer_id is not None
    message = HopHandshakeClient(node_id_to_x25519(link.peer_id), key=HopKey.IDENTITY).first_message()
    in_use: set[int] = set()
    cells = []
    for _ in range(count):
        circuit_id = new_circuit_id(rng, link_dialer=True, in_use=in_use)
        in_use.add(circuit_id)
        cells.append(handshake_cell(circuit_id, CellCommand.CREATE, message))
    await link.send(cells)
    created = refused = 0
    with trio.fail_after(HONEST_REQUEST_TIMEOUT_S):
        while created + refused < count:
            for frame in await link.receive():
                if not isinstance(frame, Cell):
                    continue
                if frame.command == CellCommand.CREATED:
                    created += 1
                elif frame.command == CellCommand.DESTROY:
                    assert destroy_reason(frame) == DestroyReason.RESOURCE_LIMIT
                    refused += 1
    return created, refused


async def test_create_flood_with_fresh_node_ids_gets_the_client_tier(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with lone_relay(tmp_path) as relay:
        dialer = WebSocketDialer(nursery)
        hop = hop_of(relay)
        await wait_for_document(dialer, hop)
        # Node ids generated for these links: each proves its key, but no directory lists it.
        links = [
            await dial_link(
                dialer, hop.address or "", expected_peer_id=hop.node_id, identity=Identity.generate()
            )
            for _ in range(FRESH_ID_LINKS)
        ]
        answered = [0] * FRESH_ID_LINKS

        async def flood(index: int) -> None:
            answered[index], _refused = await _creates_answered(links[index], CREATES_PER_LINK, index)

        started = time.monotonic()
        async with trio.open_nursery() as floods:
            for index in range(FRESH_ID_LINKS):
                floods.start_soon(flood, index)
        for link in links:
            await link.aclose()
        elapsed = time.monotonic() - started
        print(f"CREATEs answered per fresh-id link: {answered} in {elapsed:.1f} s")
        # The links are one client (their address), never exempt as listed peers: together they got at most
        # what one address may have, however many links it opens.
        address_max = rate_limits.CLIENT_CREATE_BURST + rate_limits.CLIENT_CREATE_RATE_PER_S * elapsed
        assert sum(answered) <= address_max < FRESH_ID_LINKS * CREATES_PER_LINK, answered
        # An honest client (on that same address, once the bucket refilled a little) still builds a circuit.
        await trio.sleep(1.0)
        assert "document" in await honest_request(dialer, hop)
        assert relay.process.returncode is None


def _raw_connection(port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind((FLOOD_SOURCE, 0))
    sock.connect(("127.0.0.1", port))
    return sock


async def test_connection_flood_from_one_address_is_capped(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with lone_relay(tmp_path) as relay:
        dialer = WebSocketDialer(nursery)
        hop = hop_of(relay)
        await wait_for_document(dialer, hop)
        pid = relay.process.pid
        fds_before = proc.fd_count(pid)
        _, port, _ = parse_ws_address(hop.address or "")
        held = [_raw_connection(port) for _ in range(FLOOD_CONNECTIONS)]  # no handshake, never closed
        try:
            await trio.sleep(1.0)
            fds_during = proc.fd_count(pid)
            print(f"relay fds: {fds_before} before, {fds_during} with {FLOOD_CONNECTIONS} connections held")
            assert fds_during <= fds_before + LINKS_PER_ADDRESS_MAX + FD_SLACK, fds_during
            # The relay closed the ones past the cap: their peers see the end of the stream.
            closed = 0
            for sock in held:
                sock.setblocking(False)
                with suppress(BlockingIOError):
                    closed += sock.recv(1) == b""
            assert closed >= FLOOD_CONNECTIONS - LINKS_PER_ADDRESS_MAX, closed
            # An honest client (another address) still connects and is answered.
            assert "document" in await honest_request(dialer, hop)
        finally:
            for sock in held:
                sock.close()
        assert relay.process.returncode is None


async def closed_reason(link: Link, within_s: float) -> int | None:
    with trio.fail_after(within_s), pytest.raises(LinkClosed) as closed:
        while True:
            await link.receive()
    return closed.value.reason


async def test_idle_links_are_closed_after_the_timeout(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with lone_relay(tmp_path, "--link-idle-timeout", str(IDLE_TIMEOUT_S)) as relay:
        dialer = WebSocketDialer(nursery)
        hop = hop_of(relay)
        await wait_for_document(dialer, hop)
        address = hop.address or ""
        async with ClientLink.connect(dialer, hop) as honest:
            circuit = await honest.build_circuit([hop])
            anonymous = await dial_link(dialer, address, expected_peer_id=hop.node_id)
            fresh_id = await dial_link(
                dialer, address, expected_peer_id=hop.node_id, identity=Identity.generate()
            )
            started = time.monotonic()
            for idle in (anonymous, fresh_id):
                await idle.send([Ping(1)])  # pings are not use
                assert await closed_reason(idle, IDLE_TIMEOUT_S * 3) == CloseReason.TIMEOUT
            assert IDLE_TIMEOUT_S <= time.monotonic() - started <= IDLE_TIMEOUT_S * 3
            # The link that holds a circuit is kept, and the circuit still answers.
            answers = [message async for message in circuit.request("directory", {"op": "get"})]
            assert "document" in answers[0]
            assert not honest.closed
        assert relay.process.returncode is None
