"""The roles as tp_node.roles assembles them (the commands and the simulator use the same functions): an
authority, a relay and a GPU node on the memory network publish their descriptors and the authority signs a
document that lists all three; an identity the bootstrap does not name cannot open an authority."""

from __future__ import annotations

import random

import pytest
import trio

from tests.tp_net.directory_factories import NETWORK, T0, identity, network_of
from tp_crypto.identity import Identity
from tp_crypto.noise_primitives import generate_keypair
from tp_net.protocol.bootstrap_config import Bootstrap, BootstrapAuthority, BootstrapError
from tp_net.trio.transport_memory import MemoryNetwork
from tp_node.authority_core import Admission
from tp_node.engine import FakeEngine
from tp_node.gpu_node import HomeRelay
from tp_node.roles import MakeRelay, RelayPlan, open_authority, open_node, open_relay, standard_relay

PERIOD_S = 60
AUTHORITY_ADDRESS = "ws://10.0.0.1:7000/"
RELAY_ADDRESS = "ws://10.0.0.2:7000/"
(AUTHORITY,), _ = network_of(1, 1)
BOOTSTRAP = Bootstrap(
    NETWORK, 1, PERIOD_S, (BootstrapAuthority(AUTHORITY.node_id, AUTHORITY_ADDRESS),), local=True
)
PLAN = RelayPlan(capacity=1000, version="test")


def wall_clock() -> float:
    return T0 - PERIOD_S / 2 + trio.current_time()


def relay_of(who: Identity, network: MemoryNetwork) -> tuple[MakeRelay, bytes]:
    private, public = generate_keypair()
    return standard_relay(who, [private], BOOTSTRAP, dialer=network.dialer(), rng=random.Random(1)), public


async def test_an_authority_a_relay_and_a_node_are_listed_in_the_first_document(
    autojump_clock: trio.abc.Clock,
) -> None:
    network = MemoryNetwork()
    relay_identity, node_identity = identity(101), identity(102)
    make_authority, authority_key = relay_of(AUTHORITY, network)
    make_relay, relay_key = relay_of(relay_identity, network)
    node_private, node_public = generate_keypair()
    async with (
        open_authority(
            AUTHORITY,
            BOOTSTRAP,
            PLAN,
            Admission.OPEN,
            dialer=network.dialer(),
            listener=network.listener(AUTHORITY_ADDRESS),
            onion_public_keys=lambda: (authority_key,),
            make_relay=make_authority,
            wall_clock=wall_clock,
        ) as authority,
        open_relay(
            relay_identity,
            BOOTSTRAP,
            PLAN,
            dialer=network.dialer(),
            listener=network.listener(RELAY_ADDRESS),
            onion_public_keys=lambda: (relay_key,),
            make_relay=make_relay,
            wall_clock=wall_clock,
        ) as relay,
        open_node(
            node_identity,
            BOOTSTRAP,
            onion_keys=[node_private],
            onion_public_keys=lambda: (node_public,),
            home_relays=[HomeRelay(relay_identity.node_id, RELAY_ADDRESS)],
            engine=FakeEngine(),
            dialer=network.dialer(),
            rng=random.Random(2),
            version="test",
            wall_clock=wall_clock,
        ) as node,
    ):
        assert authority.authority is not None and relay.authority is None
        assert (authority.address, relay.advertised) == (AUTHORITY_ADDRESS, RELAY_ADDRESS)
        with trio.fail_after(3 * PERIOD_S):
            await node.wait_linked()
            everyone = (AUTHORITY, relay_identity, node_identity)
            while not all(authority.directory.is_listed(who.node_id) for who in everyone):
                await trio.sleep(1)
        assert authority.directory.current_document() is not None


async def test_an_identity_the_bootstrap_does_not_name_cannot_open_an_authority() -> None:
    network = MemoryNetwork()
    stranger = identity(103)
    make_relay, public = relay_of(stranger, network)
    opening = open_authority(
        stranger,
        BOOTSTRAP,
        PLAN,
        Admission.OPEN,
        dialer=network.dialer(),
        listener=network.listener(AUTHORITY_ADDRESS),
        onion_public_keys=lambda: (public,),
        make_relay=make_relay,
    )
    with pytest.raises(BootstrapError, match="is not an authority"):
        async with opening:
            pytest.fail("a stranger opened an authority")
