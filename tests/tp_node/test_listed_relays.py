"""The relays a relay's directory lists: what its extend policy may dial (tp_node.directory_service)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.tp_net.directory_factories import (
    NODE_SEED_BASE,
    PERIOD_S,
    RELAY_SEED_BASE,
    T0,
    document,
    identity,
    network_of,
    signed_document,
    signed_node,
    signed_relay,
)
from tp_net.protocol.directory import SignedDocument, verify_document
from tp_node import directory_service
from tp_node.directory_service import DirectoryService


def test_no_document_lists_nothing_then_a_verified_one_lists_its_relays_only() -> None:
    (authority,), trust = network_of(1, 1)
    now = [float(T0 + 60)]
    service = DirectoryService(trust, wall_clock=lambda: now[0])
    assert service.listed_relays() is None
    body = document([signed_relay(1), signed_relay(2), signed_node(1)]).encode()
    assert service.offer_document(signed_document(body, [authority]))
    listed = service.listed_relays()
    assert listed == {
        identity(RELAY_SEED_BASE + 1).node_id: "ws://10.1.0.1:7000/",
        identity(RELAY_SEED_BASE + 2).node_id: "ws://10.2.0.1:7000/",
    }
    now[0] += 10 * PERIOD_S  # the document expired: its listing still says which ids are relays
    assert service.listed_relays() == listed


def test_listed_peers_are_the_relays_and_nodes_of_the_newest_verified_document() -> None:
    """The peer CREATE tier and kept links: listed relays and GPU nodes, nobody else; a newer document
    replaces the answers, and one that does not verify leaves them as they were."""
    authorities, trust = network_of(1, 1)
    relay, node = identity(RELAY_SEED_BASE + 1).node_id, identity(NODE_SEED_BASE + 1).node_id
    later_relay, stranger = identity(RELAY_SEED_BASE + 2).node_id, identity(99).node_id
    now = [float(T0 + 60)]
    service = DirectoryService(trust, wall_clock=lambda: now[0])
    assert not service.is_listed(relay)  # no document yet
    body = document([signed_relay(1), signed_node(1)]).encode()
    assert service.offer_document(signed_document(body, authorities))
    assert service.is_listed(relay) and service.is_listed(node)
    assert not service.is_listed(stranger) and not service.is_listed(later_relay)
    now[0] += 3600
    newer = document([signed_relay(2, published=int(now[0]) - 600)], period=T0 + 3600).encode()
    assert service.offer_document(signed_document(newer, authorities))
    assert service.is_listed(later_relay) and not service.is_listed(relay)


def test_a_document_is_verified_once_even_when_it_comes_back_as_a_new_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An authority's current_document builds a new SignedDocument at each call; is_listed runs at every
    CREATE from a peer, so the listing must not verify the same document again each time (~0.8 ms each)."""
    authorities, trust = network_of(1, 1)
    relay = identity(RELAY_SEED_BASE + 1).node_id
    signed = signed_document(document([signed_relay(1)]).encode(), authorities)
    verified: list[SignedDocument] = []

    def counting(document: SignedDocument, *args: Any) -> Any:
        verified.append(document)
        return verify_document(document, *args)

    class AsAnAuthority(DirectoryService):
        def current_document(self) -> SignedDocument | None:
            return SignedDocument(signed.body, signed.signatures)

    monkeypatch.setattr(directory_service, "verify_document", counting)
    service = AsAnAuthority(trust, wall_clock=lambda: float(T0 + 60))
    assert all(service.is_listed(relay) for _ in range(5))
    assert len(verified) == 1
