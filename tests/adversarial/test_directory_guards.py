"""Fetch privacy (directory guards): a gateway that fetched every document straight from the authorities
showed them every client's address and timing. Now, once it has guards, it asks them (each relay caches the
current document and serves it over the link the gateway already holds; the gateway checks the threshold
signatures itself) and the authorities only when no guard gives a document.

A real Overlay over the in-memory transport: two "authorities" and three guard relays (real relays whose
directory service serves a document the test sets, and counts requests)."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import trio

from tests.tp_net.directory_factories import NETWORK, network_of, relay_descriptor, signed_document
from tp_crypto.identity import Identity
from tp_crypto.noise import generate_keypair
from tp_gateway.overlay import Overlay
from tp_net.protocol.bootstrap_config import Bootstrap, BootstrapAuthority
from tp_net.protocol.descriptors import sign_descriptor
from tp_net.protocol.directory import DocumentBody, SignedDocument
from tp_net.trio.directory_client import DIRECTORY_SERVICE
from tp_net.trio.transport_memory import MemoryNetwork
from tp_node.relay import Relay

AUTHORITIES, TRUST = network_of(3, 2)
PERIOD_S = 8  # short, so the gateway asks again every couple of seconds
GUARDS = 3
FETCHES_FROM_GUARDS = 3
TEST_TIMEOUT_S = 40


class CountingSource:
    """A directory service that serves `document` (None: bytes that are no document) and counts requests."""

    def __init__(self) -> None:
        self.document: SignedDocument | None = None
        self.requests = 0

    async def handle(self, request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        await trio.lowlevel.checkpoint()
        self.requests += 1
        yield {"document": self.document.encode() if self.document else b"not a document"}


async def test_the_gateway_fetches_through_its_guards_and_not_from_the_authorities() -> None:
    memory = MemoryNetwork()
    period = int(time.time()) // PERIOD_S * PERIOD_S
    authority_sources, guard_sources, signed = [], [], []
    async with trio.open_nursery() as nursery:
        entries = []
        for index, authority in enumerate(AUTHORITIES[:2]):
            source = CountingSource()
            relay = Relay(
                authority,
                [generate_keypair()[0]],
                dialer=memory.dialer(),
                rng=random.Random(index),
                services={DIRECTORY_SERVICE: source.handle},
            )
            address = await nursery.start(relay.serve, memory.listener(f"ws://10.9.{index}.1:7000/"))
            authority_sources.append(source)
            entries.append(BootstrapAuthority(authority.node_id, address))
        for index in range(GUARDS):
            who = Identity(random.Random(f"guard {index}").randbytes(32))
            private, public = generate_keypair()
            address = f"ws://10.{index + 1}.0.1:7000/"
            descriptor = relay_descriptor(
                who, address=address, onion_keys=(public,), published=period - 1, lifetime_s=3600
            )
            source = CountingSource()
            relay = Relay(
                who,
                [private],
                dialer=memory.dialer(),
                rng=random.Random(10 + index),
                services={DIRECTORY_SERVICE: source.handle},
            )
            await nursery.start(relay.serve, memory.listener(address))
            guard_sources.append(source)
            signed.append(sign_descriptor(who, descriptor))
        current = signed_document(
            DocumentBody(
                NETWORK,
                period,
                period + PERIOD_S,
                period + 3 * PERIOD_S,
                tuple(sorted(signed, key=lambda s: s.open(period).node_id)),
            ).encode(),
            AUTHORITIES[:2],
        )
        for source in authority_sources + guard_sources:
            source.document = current

        overlay = Overlay(
            Bootstrap(NETWORK, 2, PERIOD_S, tuple(entries), local=True), memory.dialer(), rng=random.Random(3)
        )
        nursery.start_soon(overlay.run)
        with trio.fail_after(TEST_TIMEOUT_S):
            await overlay.ready.wait()  # the first document: from an authority (no guards yet)
            from_authorities = sum(s.requests for s in authority_sources)
            assert from_authorities == 1
            while sum(s.requests for s in authority_sources + guard_sources) < 1 + FETCHES_FROM_GUARDS:
                await trio.sleep(0.05)
            assert sum(s.requests for s in authority_sources) == from_authorities, "an authority saw a fetch"

            # No guard gives a document: the gateway falls back to the authorities.
            for source in guard_sources:
                source.document = None
            while sum(s.requests for s in authority_sources) == from_authorities:
                await trio.sleep(0.05)
        assert overlay.directory is not None and overlay.directory.valid_after == period
        nursery.cancel_scope.cancel()
