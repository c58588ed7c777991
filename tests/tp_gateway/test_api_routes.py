"""token.place's routes: the same API under /v2 and /api/v2, model aliases, and /health's fields."""

from __future__ import annotations

import json
import time

import pytest
from quart_trio import QuartTrio

from tests.tp_gateway.test_client import MODEL
from tests.tp_gateway.test_http_guard import CHAT, KEY, MeteredOverlay, send
from tp_gateway import cli
from tp_gateway.app import create_app

ALIAS = "tokenplace-default"


def app_with_aliases(overlay: MeteredOverlay, api_key: str | None = None) -> QuartTrio:
    aliases = {ALIAS: MODEL, "gone": "not-served"}
    return create_app(overlay, api_key=api_key, aliases=aliases)


@pytest.mark.parametrize("prefix", ["/v1", "/api/v1", "/v2", "/api/v2"])
async def test_every_prefix_serves_the_api_and_asks_for_the_key(prefix: str) -> None:
    overlay = MeteredOverlay()
    app = app_with_aliases(overlay, api_key=KEY)
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    status, _, body = await send(
        app, "POST", f"{prefix}/chat/completions", headers=auth, body=json.dumps(CHAT).encode()
    )
    assert status == 200 and body["object"] == "chat.completion"
    status, _, _ = await send(app, "GET", f"{prefix}/models")
    assert status == 401
    status, _, health = await send(app, "GET", f"{prefix}/health")
    assert status == 200 and health["status"] == "ok"


async def test_an_alias_is_listed_only_while_its_model_is_served_and_requests_resolve_it() -> None:
    overlay = MeteredOverlay()
    app = app_with_aliases(overlay)
    _, _, models = await send(app, "GET", "/v1/models")
    assert [model["id"] for model in models["data"]] == [MODEL, ALIAS]
    status, _, _ = await send(app, "GET", f"/v2/models/{ALIAS}")
    assert status == 200
    status, _, _ = await send(app, "GET", "/v2/models/gone")
    assert status == 404
    body = json.dumps({**CHAT, "model": ALIAS}).encode()
    status, _, _ = await send(
        app, "POST", "/v2/chat/completions", headers={"Content-Type": "application/json"}, body=body
    )
    assert status == 200 and overlay.documents[-1]["model"] == MODEL


async def test_health_has_token_places_fields() -> None:
    _, _, health = await send(app_with_aliases(MeteredOverlay()), "GET", "/api/v2/health")
    assert {"status", "version", "service", "timestamp"} <= set(health)
    assert health["service"] == "tp-gateway" and abs(health["timestamp"] - time.time()) < 60


def test_the_alias_flag() -> None:
    args = cli.build_parser().parse_args(["--model-alias", f"{ALIAS}={MODEL}", "--bootstrap", "x"])
    assert dict(args.model_alias) == {ALIAS: MODEL}
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--model-alias", "no-equals", "--bootstrap", "x"])
