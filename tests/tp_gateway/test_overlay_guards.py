"""The gateway's guard links: a dial that raises anything costs only that guard (issue 15, item 1)."""

from __future__ import annotations

import random

import pytest
import trio

from bootstrap.config import Bootstrap
from tp_gateway.overlay import Overlay, OverlayError
from tp_net.descriptors import RelayDescriptor
from tp_net.transport import Channel

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
