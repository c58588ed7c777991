"""Model identity: a model id in a directory stands for one GGUF file, named by its sha256.

Any node may put any model id in its descriptor; without a rule, a node serving some other file (a weaker
model, a fine-tune that leaks or lies) under a well-known id would get that id's requests. Per model id, the
identity is the catalogue's pinned sha256 when the network's catalogue pins one, else the sha256 of the
*first* descriptor offering it (the earliest published, ties broken by the lowest node id). Nodes offering
the id with another hash are counted as conflicts (shown by the gateway's /v1/models) and never get its
requests.

"First" is a weak rule on an open network (a descriptor's published time is its own claim, within its 3 h
lifetime): a catalogue pin is what makes an id mean one file. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from tp_net.protocol.descriptors import NodeDescriptor

SOURCE_CATALOGUE = "catalogue"
CATALOGUE_FILE_NAME = "catalogue.json"  # package data of tp_net: the network's model catalogue
SOURCE_FIRST_DESCRIPTOR = "first_descriptor"


def catalogue_entries() -> list[dict[str, Any]]:
    """The raw entries of the model catalogue, the one reader of its file (tp_node.models checks and pulls
    them; `catalogue_pins` takes their digests)."""
    text = resources.files("tp_net").joinpath(CATALOGUE_FILE_NAME).read_text()
    entries: list[dict[str, Any]] = json.loads(text)["models"]
    return entries


def catalogue_pins() -> dict[str, bytes]:
    """Model id -> GGUF sha256 of every catalogue entry whose digest is known: what the id stands for in any
    directory."""
    return {
        entry["id"]: bytes.fromhex(entry["sha256"]) for entry in catalogue_entries() if entry.get("sha256")
    }


@dataclass(frozen=True)
class ModelIdentity:
    model_id: str
    gguf_sha256: bytes
    source: str  # SOURCE_CATALOGUE or SOURCE_FIRST_DESCRIPTOR
    nodes: int  # nodes offering the id with this hash
    conflicting_nodes: int  # nodes offering the id with another hash: never routed to


def model_identities(nodes: Iterable[NodeDescriptor], pins: Mapping[str, bytes]) -> dict[str, ModelIdentity]:
    """The identity of every model id the nodes offer (a pinned id no node offers is absent)."""
    offers: dict[str, list[tuple[int, bytes, bytes]]] = {}  # id -> (published, node id, sha256)
    for node in nodes:
        for offer in node.models:
            offers.setdefault(offer.model_id, []).append((node.published, node.node_id, offer.gguf_sha256))
    identities = {}
    for model_id, found in offers.items():
        pinned = pins.get(model_id)
        sha256 = pinned if pinned is not None else min(found)[2]
        matching = sum(1 for _, _, digest in found if digest == sha256)
        source = SOURCE_CATALOGUE if pinned is not None else SOURCE_FIRST_DESCRIPTOR
        identities[model_id] = ModelIdentity(model_id, sha256, source, matching, len(found) - matching)
    return identities


def nodes_serving(
    nodes: Iterable[NodeDescriptor], model_id: str, identity: ModelIdentity | None
) -> list[NodeDescriptor]:
    """The nodes offering `model_id` with the identity's hash (none without an identity)."""
    if identity is None:
        return []
    return [
        node
        for node in nodes
        if any(o.model_id == model_id and o.gguf_sha256 == identity.gguf_sha256 for o in node.models)
    ]
