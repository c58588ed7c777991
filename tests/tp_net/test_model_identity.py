"""Model identity: the catalogue pin, else the first descriptor's hash; conflicts counted, never routed to."""

from __future__ import annotations

from tests.tp_net.directory_factories import PUBLISHED, identity, node_descriptor
from tp_net.protocol.descriptors import ModelOffer, NodeDescriptor
from tp_net.protocol.model_identity import (
    SOURCE_CATALOGUE,
    SOURCE_FIRST_DESCRIPTOR,
    ModelIdentity,
    model_identities,
    nodes_serving,
)

A, B = bytes([1]) * 32, bytes([2]) * 32


def node(number: int, *offers: tuple[str, bytes], published: int = PUBLISHED) -> NodeDescriptor:
    models = tuple(ModelOffer(m, sha, 1, "Q4_K_M", 2048, 4, 0) for m, sha in offers)
    return node_descriptor(identity(number), number=number, models=models, published=published)


def test_the_first_descriptor_names_the_file_and_later_ones_conflict() -> None:
    first, later, same = node(1, ("m", B), published=PUBLISHED - 5), node(2, ("m", A)), node(3, ("m", B))
    assert model_identities([later, first, same], {}) == {
        "m": ModelIdentity("m", B, SOURCE_FIRST_DESCRIPTOR, 2, 1)
    }


def test_ties_go_to_the_lowest_node_id() -> None:
    x, y = node(1, ("m", A)), node(2, ("m", B))
    expected = min((x.node_id, A), (y.node_id, B))[1]
    assert model_identities([x, y], {})["m"].gguf_sha256 == expected


def test_a_pin_decides_and_a_pinned_id_nobody_offers_is_absent() -> None:
    nodes = [node(1, ("m", A), published=PUBLISHED - 5), node(2, ("m", B))]
    assert model_identities(nodes, {"m": B, "other": A}) == {
        "m": ModelIdentity("m", B, SOURCE_CATALOGUE, 1, 1)
    }


def test_only_nodes_with_the_identity_hash_serve_the_id() -> None:
    good, bad, both = node(1, ("m", A)), node(2, ("m", B)), node(3, ("x", B), ("m", A))
    identities = model_identities([good, bad, both], {"m": A})
    assert nodes_serving([good, bad, both], "m", identities["m"]) == [good, both]
    assert nodes_serving([good, bad, both], "m", None) == []
