"""ListedPeers: the node ids a relay's current directory lists (the peer CREATE tier, kept links)."""

from __future__ import annotations

from tests.tp_net.directory_factories import (
    NODE_SEED_BASE,
    RELAY_SEED_BASE,
    T0,
    document,
    identity,
    network_of,
    signed_document,
    signed_node,
    signed_relay,
)
from tp_node.directory_service import DirectoryService
from tp_node.listed_peers import ListedPeers

AUTHORITIES, TRUST = network_of(1, 1)
RELAY = identity(RELAY_SEED_BASE + 1).node_id
NODE = identity(NODE_SEED_BASE + 1).node_id
LATER_RELAY = identity(RELAY_SEED_BASE + 2).node_id
STRANGER = identity(99).node_id


def test_listed_relays_and_nodes_and_nobody_else() -> None:
    now = [T0 + 60.0]
    service = DirectoryService(TRUST, wall_clock=lambda: now[0])
    listed = ListedPeers(service, clock=lambda: now[0])
    assert not listed(RELAY)  # no document yet
    body = document([signed_relay(1), signed_node(1)]).encode()
    assert service.offer_document(signed_document(body, AUTHORITIES))
    assert listed(RELAY) and listed(NODE)
    assert not listed(STRANGER) and not listed(LATER_RELAY)
    # A newer document replaces the answers.
    now[0] += 3600
    newer = document([signed_relay(2, published=int(now[0]) - 600)], period=T0 + 3600).encode()
    assert service.offer_document(signed_document(newer, AUTHORITIES))
    assert listed(LATER_RELAY) and not listed(RELAY)


def test_a_document_that_does_not_verify_lists_nobody() -> None:
    service = DirectoryService(TRUST, wall_clock=lambda: T0 + 60)
    body = document([signed_relay(1)]).encode()
    assert service.offer_document(signed_document(body, AUTHORITIES))
    listed = ListedPeers(service, clock=lambda: T0 + 10**8)  # long expired by this clock
    assert not listed(RELAY)
