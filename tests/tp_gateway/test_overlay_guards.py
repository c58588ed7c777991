"""The gateway's guards (issue 15, item 1): a dial that raises anything costs only that guard, and a bad
guard file is replaced, never a reason for the gateway to stop (at every restart)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import trio

from tests.tp_net.directory_factories import (
    NETWORK,
    RELAY_SEED_BASE,
    T0,
    identity,
    node_descriptor,
    relay_descriptor,
)
from tp_gateway.overlay import Overlay, OverlayError
from tp_net.protocol.bootstrap_config import Bootstrap, BootstrapAuthority
from tp_net.protocol.descriptors import RelayDescriptor
from tp_net.protocol.directory import Directory
from tp_net.protocol.path_selection import GUARDS_PER_CLIENT, GuardStore
from tp_net.trio.transport import Channel

GUARD = RelayDescriptor(b"g" * 32, "ws://guard.example.net:7000/", (b"k" * 32,), 100, "", "1", 0, 60)


class ExplodingDialer:
    """A dialer whose library fails with something that is no TokenPlaceError (as IDNA once did)."""

    def __init__(self) -> None:
        self.dials = 0

    async def dial(self, address: str) -> Channel:
        await trio.lowlevel.checkpoint()
        self.dials += 1
        raise UnicodeError("label empty or too long")


async def test_a_guard_whose_dial_raises_anything_is_marked_down_and_the_gateway_lives() -> None:
    dialer = ExplodingDialer()
    overlay = Overlay(Bootstrap("net", 1, 300, ()), dialer, rng=random.Random(1))
    async with trio.open_nursery() as nursery:
        overlay._nursery = nursery
        for _ in range(2):
            with pytest.raises(OverlayError):
                await overlay._link_to(GUARD)
        nursery.cancel_scope.cancel()
    assert dialer.dials == 2
    assert GUARD.node_id in overlay._guards_down


def a_directory(relay_count: int = 5) -> Directory:
    relays = [relay_descriptor(identity(RELAY_SEED_BASE + n), number=n) for n in range(1, relay_count + 1)]
    return Directory(NETWORK, T0, T0 + 60, T0 + 120, {r.node_id: r for r in relays}, {})


@pytest.mark.parametrize(
    "saved",
    [
        b"not json",
        b'{"version": 1, "guards": ["zz"]}',
        b'{"version": 1, "guards": [1]}',
        b"\xff\xfe",
        json.dumps({"version": 1, "guards": ["ab" * 32]}).encode(),  # a guard no directory lists
    ],
)
def test_a_bad_saved_guard_file_is_replaced_and_the_gateway_goes_on(tmp_path: Path, saved: bytes) -> None:
    guard_file = tmp_path / "guards.json"
    guard_file.write_bytes(saved)
    overlay = Overlay(
        Bootstrap(NETWORK, 1, 300, ()), ExplodingDialer(), rng=random.Random(2), guard_file=guard_file
    )
    directory = a_directory()
    overlay.use_directory(directory)
    assert len(overlay._guards) == GUARDS_PER_CLIENT
    assert set(overlay._guards) <= set(directory.relays)
    assert GuardStore(guard_file).load() == overlay._guards  # the next restart reads good guards


@pytest.mark.parametrize("with_guard_file", [True, False])
async def test_guards_that_are_authorities_are_replaced_once_enough_other_relays_are_listed(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, with_guard_file: bool
) -> None:
    # A brand-new network: its first directories list only its authorities, so they become the guards.
    relays = [relay_descriptor(identity(RELAY_SEED_BASE + n), number=n) for n in range(1, 7)]
    authorities, others = relays[:3], relays[3:]
    bootstrap = Bootstrap(
        NETWORK, 2, 300, tuple(BootstrapAuthority(r.node_id, r.address or "") for r in authorities)
    )
    guard_file = tmp_path / "guards.json" if with_guard_file else None
    overlay = Overlay(bootstrap, ExplodingDialer(), rng=random.Random(3), guard_file=guard_file)

    def listing(listed: list[RelayDescriptor]) -> Directory:
        return Directory(NETWORK, T0, T0 + 60, T0 + 120, {r.node_id: r for r in listed}, {})

    authority_ids = {r.node_id for r in authorities}
    overlay.use_directory(listing(authorities))
    assert set(overlay._guards) == authority_ids
    # Fewer other relays than guards: the authorities stay (a path still needs guards).
    await trio.sleep(300)
    overlay.use_directory(listing(authorities + others[:2]))
    assert set(overlay._guards) == authority_ids
    # Enough relays that are not authorities: none of the guards is an authority any more, and it stays so.
    await trio.sleep(300)
    overlay.use_directory(listing(relays))
    assert len(overlay._guards) == GUARDS_PER_CLIENT and not set(overlay._guards) & authority_ids
    if guard_file is not None:
        assert GuardStore(guard_file).load() == overlay._guards  # a restart keeps the new guards


def test_a_home_relay_is_no_guard_while_enough_other_relays_are_listed() -> None:
    # The netns topology: three authorities and one home relay. A home relay as our guard would see our
    # address and its node's; the authorities are the better guards here, and they stay guards when the home
    # relay is listed before its node is.
    relays = [relay_descriptor(identity(RELAY_SEED_BASE + n), number=n) for n in range(1, 5)]
    authorities, home = relays[:3], relays[3]
    bootstrap = Bootstrap(
        NETWORK, 2, 300, tuple(BootstrapAuthority(r.node_id, r.address or "") for r in authorities)
    )
    node = node_descriptor(identity(RELAY_SEED_BASE + 50), home_relays=(home.node_id,))
    listed = {r.node_id: r for r in relays}
    for seed in range(20):
        overlay = Overlay(bootstrap, ExplodingDialer(), rng=random.Random(seed))
        overlay.use_directory(Directory(NETWORK, T0, T0 + 60, T0 + 120, listed, {}))
        overlay.use_directory(Directory(NETWORK, T0, T0 + 60, T0 + 120, listed, {node.node_id: node}))
        assert home.node_id not in overlay._guards, seed
