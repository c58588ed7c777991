"""Attacks on a relay's EXTEND path (issue 15, items 1, 4, 5, 6), run as a stranger would: an anonymous
client on a real WebSocket link to a real tp-relay process, sending hand-made (but correctly layered) cells.

Each test asserts the defence: the attacker's circuit gets a DESTROY with the reason that names the rule, the
relay process lives, and an honest circuit (and request) through the same relays still succeeds. Notes on
each attack and its defence: tests/adversarial/notes-extend.md.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from bootstrap.new_network import BOOTSTRAP_FILE_NAME, create_network
from tp_dev.local_network import LocalNetwork, free_ports, local_network
from tp_dev.processes import StartedProcess, python_process
from tp_net.protocol.bootstrap_config import load_bootstrap
from tp_net.protocol.cells import CellCommand, DestroyReason, destroy_reason
from tp_net.protocol.circuit_client import CIRCUIT_HOPS_MAX, HopInfo
from tp_net.protocol.circuit_hop import EXTEND_TIMEOUT_S, PENDING_EXTENDS_PER_LINK_MAX
from tp_net.protocol.directory import verify_document
from tp_net.protocol.errors import TokenPlaceError
from tp_net.protocol.frames import Cell
from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.protocol.relay_messages import RelayExtend
from tp_net.trio.client import Circuit, ClientLink
from tp_net.trio.directory_client import fetch_document
from tp_net.trio.hop_runtime import EXPIRE_INTERVAL_S
from tp_net.trio.transport_ws import WebSocketDialer
from tp_node.engine import fake_token

DESTROY_WAIT_S = 15.0
DIRECTORY_WAIT_S = 60.0
NO_DIRECTORY_PERIOD_S = 120  # a local network whose first document is minutes away (item 5)


# --- the attacker's tools ----------------------------------------------------------------------------


@dataclass
class Tarpit:
    """A loopback TCP listener the test owns: counts connections and bytes, never answers."""

    address: str = ""
    connections: int = 0
    received: bytearray = field(default_factory=bytearray)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.address = f"ws://127.0.0.1:{listener.socket.getsockname()[1]}"
        task_status.started()
        await trio.serve_listeners(self._handle, [listener])

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        async for data in stream:
            self.received += data


@dataclass
class Attack:
    """An attacker's circuit, and the DESTROY reasons the relays sent on it (the client closing a circuit
    on its own, e.g. on an EXTENDED it never asked for, is no defence of the relay's)."""

    link: ClientLink
    circuit: Circuit
    destroys: list[DestroyReason] = field(default_factory=list)

    def extend(self, message: RelayExtend, *, early: bool = True) -> None:
        """An EXTEND to the last hop, layered like a real client's, in a RELAY_EARLY cell or not."""
        core = self.circuit.core
        self.link.send_cells([core._relay_to(core.hops_built - 1, message, early=early)])

    async def destroyed(self, timeout_s: float = DESTROY_WAIT_S) -> DestroyReason:
        with trio.fail_after(timeout_s):
            while not self.destroys:
                await trio.sleep(0.05)
        return self.destroys[0]


async def attack_circuit(link: ClientLink, path: Sequence[HopInfo]) -> Attack:
    attack = Attack(link, await link.build_circuit(path))
    receive = attack.circuit.receive

    def recording(cell: Cell) -> None:
        if cell.command == CellCommand.DESTROY:
            attack.destroys.append(destroy_reason(cell))
        receive(cell)

    attack.circuit.receive = recording  # type: ignore[method-assign]
    return attack


def extend_message(node_id: bytes, address: str | None, hop: HopInfo) -> RelayExtend:
    return RelayExtend(node_id, address, hop.handshake().first_message())


def alive(process: StartedProcess) -> bool:
    return process.process.poll() is None


async def honest_request(nursery: trio.Nursery, network: LocalNetwork) -> None:
    """A 4-hop circuit from a fresh client and one inference request on it."""
    path = network.path()
    async with ClientLink.connect(WebSocketDialer(nursery), path[0]) as link:
        circuit = await link.build_circuit(path)
        request = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}
        with trio.fail_after(60):
            received = [chunk async for chunk in circuit.request(INFERENCE_SERVICE, request)]
    seed = hashlib.blake2b(b"hello", digest_size=8).digest()
    assert [chunk["text"] for chunk in received[:-1]] == [fake_token(seed, i) for i in range(3)]


async def wait_for_listing(nursery: trio.Nursery, bootstrap_file: Path, hops: Sequence[HopInfo]) -> None:
    """Until the first hop (an authority) serves a document that lists every relay in `hops`."""
    trust = load_bootstrap(bootstrap_file).trust()
    wanted = {hop.node_id for hop in hops}
    with trio.fail_after(DIRECTORY_WAIT_S):
        while True:
            try:
                document = await fetch_document(
                    WebSocketDialer(nursery), HopInfo(hops[0].node_id, None, hops[0].address)
                )
                if wanted <= set(verify_document(document, trust, time.time()).relays):
                    return
            except TokenPlaceError:
                pass
            await trio.sleep(0.5)


# --- item 1: one EXTEND crashed any relay ----------------------------------------------------------


async def test_extend_to_a_malformed_address_costs_only_that_circuit(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with local_network(tmp_path) as network:
        guard = network.relay_hop(0)
        stranger = random.Random(1)
        async with ClientLink.connect(WebSocketDialer(nursery), guard) as link:
            for address in ["ws://a..b:80/", "ws://127.0.0.1:9/\u00e9", "ws://[::1:80/", "ws://127.1:9/"]:
                attack = await attack_circuit(link, [guard])
                attack.extend(extend_message(stranger.randbytes(32), address, network.relay_hop(1)))
                assert await attack.destroyed() is DestroyReason.CONNECT_FAILED
        assert all(alive(relay) for relay in network.relays)
        await honest_request(nursery, network)


# --- item 4: loops and circuits of any length ------------------------------------------------------


async def test_an_extend_past_the_budget_or_outside_relay_early_is_destroyed(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with local_network(tmp_path) as network:
        relays = [network.relay_hop(i) for i in range(3)]
        loop = [relays[i % 3] for i in range(CIRCUIT_HOPS_MAX)]  # r0 -> r1 -> r2 -> r0 -> ...
        async with ClientLink.connect(WebSocketDialer(nursery), relays[0]) as link:
            attack = await attack_circuit(link, loop)  # the longest circuit the budget allows
            next_hop = relays[CIRCUIT_HOPS_MAX % 3]
            attack.extend(extend_message(next_hop.node_id, next_hop.address, next_hop))
            assert await attack.destroyed() is DestroyReason.PROTOCOL

            short = await attack_circuit(link, relays[:1])
            short.extend(extend_message(relays[1].node_id, relays[1].address, relays[1]), early=False)
            assert await short.destroyed() is DestroyReason.PROTOCOL
        assert all(alive(relay) for relay in network.relays)
        await honest_request(nursery, network)


# --- item 5: one client took every pending-extend slot ---------------------------------------------


async def test_one_client_cannot_hold_every_pending_extend(nursery: trio.Nursery, tmp_path: Path) -> None:
    tarpit = Tarpit()
    await nursery.start(tarpit.serve)
    # No directory for minutes: the relays of this local network dial what the client names (item 6 is
    # the directory rule); the per-link cap is what holds here.
    async with local_network(tmp_path, period_s=NO_DIRECTORY_PERIOD_S) as network:
        guard = network.relay_hop(0)
        stranger = random.Random(2)
        async with ClientLink.connect(WebSocketDialer(nursery), guard) as link:
            hogs = [await attack_circuit(link, [guard]) for _ in range(PENDING_EXTENDS_PER_LINK_MAX + 8)]
            for hog in hogs:  # distinct ids: the relay shares a dial only between requests for one id
                hog.extend(extend_message(stranger.randbytes(32), tarpit.address, guard))
            refused = [await hog.destroyed() for hog in hogs[PENDING_EXTENDS_PER_LINK_MAX:]]
            assert refused == [DestroyReason.RESOURCE_LIMIT] * 8
            assert all(not hog.destroys for hog in hogs[:PENDING_EXTENDS_PER_LINK_MAX])

            await honest_request(nursery, network)  # another link: slots remain for it

            # The held extends time out (the dial and the circuit's extend), freeing their slots.
            deadline_s = EXTEND_TIMEOUT_S + 2 * EXPIRE_INTERVAL_S
            reasons = {await hog.destroyed(deadline_s) for hog in hogs[:PENDING_EXTENDS_PER_LINK_MAX]}
            assert reasons <= {DestroyReason.TIMEOUT, DestroyReason.CONNECT_FAILED}
        assert tarpit.connections >= 1  # the attack did reach the tarpit: the relay dialed, and gave up
        assert all(alive(relay) for relay in network.relays)


# --- item 6: EXTEND as a blind SSRF and port scanner -----------------------------------------------


async def test_a_relay_dials_the_listed_address_and_never_the_clients_path(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    tarpit = Tarpit()
    await nursery.start(tarpit.serve)
    async with local_network(tmp_path) as network:
        relays = [network.relay_hop(i) for i in range(3)]
        await wait_for_listing(nursery, network.bootstrap_file, relays)
        guard = relays[0]
        async with ClientLink.connect(WebSocketDialer(nursery), guard) as link:
            # A listed relay's id with the tarpit's address: the relay dials the listed address instead.
            lying = HopInfo(relays[2].node_id, relays[2].onion_key, tarpit.address + "/admin/delete")
            built = await link.build_circuit([guard, lying])
            assert built.is_open
            await trio.sleep(0.5)
            assert (tarpit.connections, bytes(tarpit.received)) == (0, b"")
            # A local network dials a relay it does not list yet at the client's address (a network still
            # starting), but never the path the client typed.
            attack = await attack_circuit(link, [guard])
            stranger = random.Random(3).randbytes(32)
            attack.extend(extend_message(stranger, tarpit.address + "/admin/delete", guard))
            with trio.fail_after(DESTROY_WAIT_S):
                while b"\r\n\r\n" not in tarpit.received:
                    await trio.sleep(0.05)
            assert tarpit.received.startswith(b"GET / HTTP/1.1\r\n")
            assert b"admin" not in tarpit.received
        assert all(alive(relay) for relay in network.relays)
        await honest_request(nursery, network)


@asynccontextmanager
async def public_network(data_dir: Path, relay_count: int = 2) -> AsyncIterator[list[StartedProcess]]:
    """Authorities of a network NOT marked local, on 127.0.0.1 (as in local_network, but local=False)."""
    addresses = [f"ws://127.0.0.1:{port}/" for port in free_ports(relay_count)]
    network_dir = data_dir / "network"
    create_network(network_dir, "public-test", addresses, relay_count, period_s=4, local=False)
    async with AsyncExitStack() as stack:
        relays = []
        for index, address in enumerate(addresses):
            args = ["tp_node.relay_cli", "--listen", address[5:-1], "--authority"]
            args += ["--data-dir", str(network_dir / f"authority-{index + 1}")]
            args += ["--bootstrap", str(network_dir / BOOTSTRAP_FILE_NAME), "--log-level", "warning"]
            relays.append(await stack.enter_async_context(python_process(args)))
        yield relays


def hop_of(relay: StartedProcess) -> HopInfo:
    announcement = relay.announcement
    return HopInfo(
        bytes.fromhex(announcement["node_id"]),
        bytes.fromhex(announcement["onion_key"]),
        announcement["address"],
    )


async def test_outside_a_local_network_extend_is_no_ssrf_even_to_a_listed_loopback_relay(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    tarpit = Tarpit()
    await nursery.start(tarpit.serve)
    async with public_network(tmp_path) as relays:
        hops = [hop_of(relay) for relay in relays]
        await wait_for_listing(nursery, tmp_path / "network" / BOOTSTRAP_FILE_NAME, hops)
        async with ClientLink.connect(WebSocketDialer(nursery), hops[0]) as link:
            for node_id, address in [
                (hops[1].node_id, tarpit.address),
                (random.Random(4).randbytes(32), tarpit.address),
            ]:
                attack = await attack_circuit(link, [hops[0]])
                attack.extend(extend_message(node_id, address, hops[1]))
                assert await attack.destroyed() is DestroyReason.CONNECT_FAILED
        # Honest use of the same relay goes on: its directory service, over a one-hop circuit.
        assert (await fetch_document(WebSocketDialer(nursery), hops[0])).body
        assert (tarpit.connections, bytes(tarpit.received)) == (0, b"")
        assert all(alive(relay) for relay in relays)
