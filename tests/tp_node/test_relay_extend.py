"""Whatever a relay's dial for an EXTEND raises costs only the circuits waiting for it (issue 15, item 1:
an IDNA UnicodeError escaped Relay._dial and ended the relay's process). In memory: the exception comes
from a fake dialer, which is the honest scope for "any exception a transport library may raise"."""

from __future__ import annotations

import logging
import random
import socket
from typing import Any

import pytest
import trio

from tp_crypto.identity import Identity
from tp_net.protocol.cells import DestroyReason
from tp_net.protocol.extend_policy import ExtendPolicy
from tp_net.protocol.relay_messages import RelayExtend
from tp_net.trio.client import ClientLink
from tp_net.trio.transport import Channel, Dialer
from tp_net.trio.transport_memory import MemoryNetwork
from tp_node.relay import EXTEND_DIAL_TIMEOUT_S, Relay
from tp_node.testing.memory_network import in_process_network

EXPLODING = "mem://explode"


class ExplodingDialer:
    def __init__(self, inner: Dialer) -> None:
        self._inner = inner

    async def dial(self, address: str) -> Channel:
        if address == EXPLODING:
            await trio.lowlevel.checkpoint()
            raise UnicodeError("encoding with 'idna' codec failed")
        return await self._inner.dial(address)


def relay_with_an_exploding_dialer(
    index: int, identity: Identity, onion_keys: list[bytes], net: MemoryNetwork, rng: random.Random
) -> Relay:
    return Relay(identity, onion_keys, dialer=ExplodingDialer(net.dialer()), rng=rng)


async def test_a_dial_that_raises_anything_costs_one_circuit_and_the_relay_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tp_node.relay")
    async with in_process_network(make_relay=relay_with_an_exploding_dialer) as net:
        guard = net.relay_hops[0]
        async with ClientLink.connect(net.network.dialer(), guard) as link:
            circuit = await link.build_circuit([guard])
            extend = RelayExtend(b"x" * 32, EXPLODING, net.relay_hops[1].handshake().first_message())
            link.send_cells([circuit.core._relay_to(0, extend, early=True)])
            with trio.fail_after(10):
                while circuit.close_reason is None:
                    await trio.sleep(0.01)
            assert circuit.close_reason is DestroyReason.CONNECT_FAILED
            honest = await link.build_circuit(net.path())
            assert honest.is_open
    assert "UnicodeError" in caplog.text and "idna" not in caplog.text


class FakeResolver(trio.abc.HostnameResolver):
    """DNS as an attacker who controls a listed relay's name would set it up."""

    def __init__(self, table: dict[str, str]) -> None:
        self._table = table

    async def getaddrinfo(  # type: ignore[override]  # noqa: PLR0917 - trio's signature
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[tuple[Any, Any, int, str, tuple[str, int]]]:
        await trio.lowlevel.checkpoint()
        name = host.decode() if isinstance(host, bytes) else str(host)
        port_number = int(port.decode() if isinstance(port, bytes) else port or 0)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (self._table[name], port_number))]

    async def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        raise NotImplementedError


class RecordingDialer:
    def __init__(self, inner: Dialer) -> None:
        self._inner = inner
        self.addresses: list[str] = []

    async def dial(self, address: str) -> Channel:
        self.addresses.append(address)
        return await self._inner.dial(address)


async def test_a_listed_host_name_that_resolves_to_a_private_address_is_not_dialed() -> None:
    rebinding, public = b"r" * 32, b"p" * 32
    listed = {rebinding: "ws://rebind.example.net:7000/", public: "ws://public.example.net:7000/tp"}
    dialers: list[RecordingDialer] = []

    def relay_with_a_public_policy(
        index: int, identity: Identity, onion_keys: list[bytes], net: MemoryNetwork, rng: random.Random
    ) -> Relay:
        dialers.append(RecordingDialer(net.dialer()))
        policy = ExtendPolicy(lambda: listed, local_network=False)
        return Relay(identity, onion_keys, dialer=dialers[-1], rng=rng, extend_policy=policy)

    previous = trio.socket.set_custom_hostname_resolver(
        FakeResolver({"rebind.example.net": "127.0.0.1", "public.example.net": "8.8.8.8"})
    )
    try:
        async with in_process_network(make_relay=relay_with_a_public_policy) as net:
            guard = net.relay_hops[0]
            async with ClientLink.connect(net.network.dialer(), guard) as link:
                for node_id in (rebinding, public):
                    circuit = await link.build_circuit([guard])
                    extend = RelayExtend(node_id, "ws://127.0.0.1:22/", guard.handshake().first_message())
                    link.send_cells([circuit.core._relay_to(0, extend, early=True)])
                    with trio.fail_after(10):
                        while circuit.close_reason is None:
                            await trio.sleep(0.01)
                    assert circuit.close_reason is DestroyReason.CONNECT_FAILED
    finally:
        trio.socket.set_custom_hostname_resolver(previous)
    assert dialers[0].addresses == ["ws://8.8.8.8:7000/tp"]


class HangingDialer:
    """An address that accepts and never answers: the dial never returns on its own."""

    def __init__(self, inner: Dialer) -> None:
        self._inner = inner
        self.hanging = 0

    async def dial(self, address: str) -> Channel:
        if address != EXPLODING:
            return await self._inner.dial(address)
        self.hanging += 1
        try:
            await trio.sleep_forever()
        finally:
            self.hanging -= 1
        raise AssertionError("unreachable")


async def test_a_dial_that_never_answers_gives_up_after_the_dial_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    dialers: list[HangingDialer] = []
    relays: list[Relay] = []

    def relay_with_a_hanging_dialer(
        index: int, identity: Identity, onion_keys: list[bytes], net: MemoryNetwork, rng: random.Random
    ) -> Relay:
        dialers.append(HangingDialer(net.dialer()))
        relays.append(Relay(identity, onion_keys, dialer=dialers[-1], rng=rng))
        return relays[-1]

    async with in_process_network(make_relay=relay_with_a_hanging_dialer) as net:
        guard = net.relay_hops[0]
        async with ClientLink.connect(net.network.dialer(), guard) as link:
            circuit = await link.build_circuit([guard])
            extend = RelayExtend(b"x" * 32, EXPLODING, guard.handshake().first_message())
            link.send_cells([circuit.core._relay_to(0, extend, early=True)])
            await trio.sleep(EXTEND_DIAL_TIMEOUT_S / 2)
            assert dialers[0].hanging == 1
            await trio.sleep(EXTEND_DIAL_TIMEOUT_S / 2 + 0.1)
            assert dialers[0].hanging == 0  # the dial task is gone, its resources freed
            assert circuit.close_reason is DestroyReason.CONNECT_FAILED
            assert relays[0].core.circuit_count == 0
