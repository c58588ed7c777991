"""Rollback: a directory source (a byzantine authority, or a relay serving its cache) answers with an older
document that is still valid, signed by enough authorities, to bring back relays the authorities have since
dropped or to hide new ones. Every role that takes documents takes them through one place,
tp_net.protocol.directory.NewestDocument, which refuses a document older (`valid_after`) than the one held.

The gateway (and so the in-process client, which runs the gateway's Overlay) is attacked as a client would
be: a real Overlay fetching over the in-memory transport from two "authorities" (real relays on the
authorities' keys) whose directory service first serves the current document and then replays an older one.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import pytest
import trio

from tests.tp_net.directory_factories import NETWORK, network_of, relay_descriptor, signed_document
from tp_crypto.identity import Identity
from tp_crypto.noise import generate_keypair
from tp_gateway.overlay import Overlay
from tp_net.protocol.bootstrap_config import Bootstrap, BootstrapAuthority
from tp_net.protocol.descriptors import sign_descriptor
from tp_net.protocol.directory import DirectoryError, DocumentBody, NewestDocument, SignedDocument, Trust
from tp_net.trio.directory_client import DIRECTORY_SERVICE
from tp_net.trio.transport_memory import MemoryNetwork
from tp_node.directory_service import DirectoryService
from tp_node.relay import Relay

AUTHORITIES, TRUST = network_of(3, 2)
PERIOD_S = 8  # short, so the gateway asks again every DOCUMENT_RETRY_S
FETCHES_OF_THE_OLD_DOCUMENT = 3
TEST_TIMEOUT_S = 30


def document_of(period: int, relay_numbers: range) -> SignedDocument:
    """A document valid from `period`, listing relays `relay_numbers`, signed by two authorities."""
    relays = []
    for number in relay_numbers:
        who = Identity(random.Random(f"relay {number}").randbytes(32))
        descriptor = relay_descriptor(who, number=number, published=period - 1, lifetime_s=3600)
        relays.append(sign_descriptor(who, descriptor))
    relays.sort(key=lambda signed: signed.open(period).node_id)
    body = DocumentBody(NETWORK, period, period + PERIOD_S, period + 3 * PERIOD_S, tuple(relays))
    return signed_document(body.encode(), AUTHORITIES[:2])


class ReplayingSource:
    """A directory service that answers with whatever document the attacker sets, and counts requests."""

    def __init__(self, document: SignedDocument) -> None:
        self.document = document
        self.served: list[SignedDocument] = []

    async def handle(self, request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        await trio.lowlevel.checkpoint()
        self.served.append(self.document)
        yield {"document": self.document.encode()}


def periods_now() -> tuple[int, int]:
    """The current period and the one before: both documents are still valid now."""
    current = int(time.time()) // PERIOD_S * PERIOD_S
    return current - PERIOD_S, current


async def test_the_gateway_refuses_an_older_document_replayed_by_its_directory_sources() -> None:
    old_period, new_period = periods_now()
    old = document_of(old_period, range(1, 9))  # lists relays 7 and 8, since dropped
    new = document_of(new_period, range(1, 7))
    memory = MemoryNetwork()
    sources, entries = [], []
    async with trio.open_nursery() as nursery:
        for index, authority in enumerate(AUTHORITIES[:2]):
            source = ReplayingSource(new)
            relay = Relay(
                authority,
                [generate_keypair()[0]],
                dialer=memory.dialer(),
                rng=random.Random(index),
                services={DIRECTORY_SERVICE: source.handle},
            )
            address = await nursery.start(relay.serve, memory.listener(f"mem://authority{index}"))
            sources.append(source)
            entries.append(BootstrapAuthority(authority.node_id, address))
        bootstrap = Bootstrap(NETWORK, 2, PERIOD_S, (*entries,), local=True)
        overlay = Overlay(bootstrap, memory.dialer(), rng=random.Random(3))
        nursery.start_soon(overlay.run)
        with trio.fail_after(TEST_TIMEOUT_S):
            await overlay.ready.wait()
            assert overlay.directory is not None and overlay.directory.valid_after == new_period

            # The attack: every source now replays the older document.
            for source in sources:
                source.document = old
            while sum(s.served.count(old) for s in sources) < FETCHES_OF_THE_OLD_DOCUMENT:
                await trio.sleep(0.05)
        assert overlay.directory.valid_after == new_period, "the gateway rolled back to an older document"
        assert len(overlay.directory.relays) == 6
        nursery.cancel_scope.cancel()


def test_a_relay_cache_keeps_its_newer_document() -> None:
    old_period, new_period = periods_now()
    old, new = document_of(old_period, range(1, 4)), document_of(new_period, range(1, 3))
    service = DirectoryService(TRUST)
    assert service.offer_document(new)
    assert not service.offer_document(old)  # refused (a warning names the rollback)
    assert service.current_document() == new
    assert service.current_valid_after() == new_period


def test_newest_document_refuses_older_keeps_same_takes_newer() -> None:
    old_period, new_period = periods_now()
    newest = NewestDocument(Trust(TRUST.network, TRUST.authorities, 2))
    assert newest.offer(document_of(old_period, range(1, 2)), time.time())
    assert newest.offer(document_of(new_period, range(1, 3)), time.time())
    again = document_of(new_period, range(1, 4))  # another body of the held period: the held one stays
    assert not newest.offer(again, time.time())
    assert newest.directory is not None and len(newest.directory.relays) == 2
    with pytest.raises(DirectoryError, match="rollback"):
        newest.offer(document_of(old_period, range(1, 2)), time.time())
    assert newest.directory.valid_after == new_period
