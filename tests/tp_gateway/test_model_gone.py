"""A model whose nodes all left the directory is "gone for now" (503 with Retry-After), not unknown (404):
a client can tell a model that will be back from one that never existed."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncGenerator, Mapping
from typing import Any, cast

import pytest

from tests.tp_gateway.test_client import ScriptedOverlay
from tests.tp_gateway.test_http_guard import CHAT, app_of, send
from tests.tp_net.directory_factories import (
    NETWORK,
    NODE_SEED_BASE,
    RELAY_SEED_BASE,
    T0,
    identity,
    model_offer,
    node_descriptor,
    relay_descriptor,
)
from tp_gateway.isolation import Isolation
from tp_gateway.overlay import MODEL_REMEMBERED_S, Overlay, OverlayError
from tp_net.protocol.bootstrap_config import Bootstrap
from tp_net.protocol.directory import Directory

PERIOD_S = 300


def _directory(with_node: bool) -> Directory:
    relays = [relay_descriptor(identity(RELAY_SEED_BASE + n), number=n) for n in range(1, 4)]
    node = node_descriptor(identity(NODE_SEED_BASE + 1), models=(model_offer("gone-model"),))
    nodes = {node.node_id: node} if with_node else {}
    return Directory(NETWORK, T0, T0 + 60, T0 + 120, {r.node_id: r for r in relays}, nodes)


async def _error_of(overlay: Overlay, model_id: str) -> OverlayError:
    with pytest.raises(OverlayError) as caught:
        async for _ in overlay.generate(model_id, {}):
            pass
    return caught.value


async def test_a_model_seen_recently_is_gone_for_now_and_one_never_seen_does_not_exist() -> None:
    overlay = Overlay(Bootstrap(NETWORK, 1, PERIOD_S, ()), cast(Any, None), rng=random.Random(5))
    overlay.use_directory(_directory(with_node=True))
    overlay.use_directory(_directory(with_node=False))
    gone = await _error_of(overlay, "gone-model")
    assert (gone.code, gone.retry_after_s) == ("model_gone", PERIOD_S // 2)
    assert (await _error_of(overlay, "never-model")).code == "model_not_found"
    # Remembered for MODEL_REMEMBERED_S, not for ever.
    overlay._models_seen["gone-model"] -= MODEL_REMEMBERED_S
    assert (await _error_of(overlay, "gone-model")).code == "model_not_found"


class GoneOverlay(ScriptedOverlay):
    async def generate(
        self, model_id: str, document: Mapping[str, Any], *, isolation: Isolation = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        error = OverlayError("model_gone", "no node serves it right now")
        error.retry_after_s = 150
        raise error
        yield {}


async def test_the_api_answers_503_with_retry_after() -> None:
    status, headers, body = await send(
        app_of(GoneOverlay()),
        "POST",
        "/v1/chat/completions",
        headers={"Content-Type": "application/json"},
        body=json.dumps(CHAT).encode(),
    )
    assert status == 503 and headers["Retry-After"] == "150"
    assert body["error"]["code"] == "model_unavailable" and body["error"]["param"] == "model"
