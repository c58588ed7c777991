"""A node claims a well-known model id for another GGUF file (issue 18, part 2: model identity).

Against main, any node could put any model id in its descriptor and `gguf_sha256` was never checked: an
impostor declaring 1,024 free slots under a popular id got nearly all of its requests. Now the id stands for
one sha256 (the catalogue's pin, else the first descriptor's), the gateway routes the id only to nodes
advertising that hash, and /v1/models shows the hash and how many nodes conflict with it.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, cast

from tests.tp_gateway.test_http_guard import send
from tests.tp_net.directory_factories import (
    NETWORK,
    NODE_SEED_BASE,
    PUBLISHED,
    RELAY_SEED_BASE,
    T0,
    identity,
    model_offer,
    node_descriptor,
    relay_descriptor,
)
from tp_gateway.app import create_app
from tp_gateway.overlay import Overlay
from tp_net.protocol.bootstrap_config import Bootstrap
from tp_net.protocol.descriptors import ModelOffer, NodeDescriptor
from tp_net.protocol.directory import Directory
from tp_net.protocol.model_identity import SOURCE_CATALOGUE, SOURCE_FIRST_DESCRIPTOR

MODEL = "tiny-llama"
REAL = hashlib.sha256(b"the real tiny-llama GGUF").digest()
FAKE = hashlib.sha256(b"something else under its name").digest()
PERIOD_S = 300


def _node(number: int, sha256: bytes, *, slots: int, published: int) -> NodeDescriptor:
    offer = ModelOffer(MODEL, sha256, 10**9, "Q4_K_M", 2048, slots, 0)
    return node_descriptor(
        identity(NODE_SEED_BASE + number), number=number, models=(offer,), published=published
    )


def _directory(*nodes: NodeDescriptor) -> Directory:
    relays = [relay_descriptor(identity(RELAY_SEED_BASE + n), number=n) for n in range(1, 4)]
    return Directory(
        NETWORK, T0, T0 + 60, T0 + 120, {r.node_id: r for r in relays}, {n.node_id: n for n in nodes}
    )


def _overlay(pins: dict[str, bytes] | None = None) -> Overlay:
    return Overlay(
        Bootstrap(NETWORK, 1, PERIOD_S, ()), cast(Any, None), rng=random.Random(1), pins=pins or {}
    )


def test_an_impostor_after_the_first_descriptor_gets_no_request() -> None:
    honest = _node(1, REAL, slots=4, published=PUBLISHED - 60)
    impostor = _node(2, FAKE, slots=1024, published=PUBLISHED)
    overlay = _overlay()
    overlay.use_directory(_directory(honest, impostor))
    assert overlay._nodes_for(MODEL) == [honest]
    identity_ = overlay.model_identity(MODEL)
    assert identity_ is not None
    assert (identity_.gguf_sha256, identity_.source, identity_.conflicting_nodes) == (
        REAL,
        SOURCE_FIRST_DESCRIPTOR,
        1,
    )


def test_the_catalogue_pin_wins_even_when_the_impostor_came_first() -> None:
    impostor = _node(2, FAKE, slots=1024, published=PUBLISHED - 600)
    honest = _node(1, REAL, slots=4, published=PUBLISHED)
    overlay = _overlay({MODEL: REAL})
    overlay.use_directory(_directory(impostor, honest))
    assert overlay._nodes_for(MODEL) == [honest]
    only_impostor = _overlay({MODEL: REAL})
    only_impostor.use_directory(_directory(impostor))
    assert only_impostor._nodes_for(MODEL) == []  # no node serves the real file: nobody gets the requests


async def test_models_list_shows_the_hash_and_the_conflicts() -> None:
    overlay = _overlay({MODEL: REAL})
    overlay.use_directory(
        _directory(_node(1, REAL, slots=4, published=PUBLISHED), _node(2, FAKE, slots=8, published=PUBLISHED))
    )
    app = create_app(overlay)
    status, _, listed = await send(app, "GET", "/v1/models")
    assert status == 200
    [model] = listed["data"]
    assert model["id"] == MODEL
    assert model["gguf_sha256"] == REAL.hex()
    assert (model["gguf_sha256_source"], model["nodes"], model["conflicting_nodes"]) == (
        SOURCE_CATALOGUE,
        1,
        1,
    )
    status, _, one = await send(app, "GET", f"/v1/models/{MODEL}")
    assert status == 200
    assert one["gguf_sha256"] == REAL.hex()
    assert model_offer().model_id == MODEL  # the factories' default offer names the same model
