"""The gateway's web guard (tp_gateway.http_guard, enforced by tp_gateway.app): Host, Origin, Content-Type,
CORS, the key's exemptions, and tp-gateway's refusal to serve other machines without a key."""

from __future__ import annotations

import json
from typing import Any

import pytest
from quart_trio import QuartTrio
from werkzeug.datastructures import Headers

from tests.tp_gateway.test_client import MODEL, ScriptedOverlay
from tp_gateway import cli
from tp_gateway.app import LOOPBACK_ONLY, create_app
from tp_gateway.http_guard import SiteRules, is_json, is_loopback, origin_argument

PORT = 8000
SERVED = ("127.0.0.1", PORT)
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
KEY = "sk-secret"


MeteredOverlay = ScriptedOverlay  # it has the counters /metrics reads


def app_of(
    overlay: ScriptedOverlay, site: SiteRules = LOOPBACK_ONLY, api_key: str | None = None
) -> QuartTrio:
    return create_app(overlay, site=site, api_key=api_key)


async def send(
    app: QuartTrio,
    method: str,
    path: str,
    *,
    host: str = f"127.0.0.1:{PORT}",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    server: tuple[str, int] = SERVED,
) -> tuple[int, Headers, Any]:
    """One request as hypercorn would hand it over: `server` is the local address it arrived on."""
    client = app.test_client()
    all_headers = {"Host": host, **(headers or {})}
    response = await client.open(
        path, method=method, headers=all_headers, data=body, scope_base={"server": server}
    )
    data = await response.get_data()
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = data
    return response.status_code, response.headers, parsed


def post_chat(content_type: str) -> dict[str, Any]:
    return {"headers": {"Content-Type": content_type}, "body": json.dumps(CHAT).encode()}


# --- the rules, sans-IO ---------------------------------------------------------------------------


def test_hosts_served_are_loopback_and_the_local_address_with_the_port_and_the_operators_names() -> None:
    rules = SiteRules.of(hosts=["gw.example.net", "Other.Example:8443"])
    for host in ("127.0.0.1:8000", "localhost:8000", "LOCALHOST:8000", "[::1]:8000"):
        assert rules.host_allowed(host, SERVED), host
    assert rules.host_allowed("192.168.1.5:8000", ("192.168.1.5", 8000))  # the address it arrived on
    assert rules.host_allowed("[::1]:8000", ("::1", 8000))
    for host in ("gw.example.net", "gw.example.net:8000", "gw.example.net:443", "other.example:8443"):
        assert rules.host_allowed(host, SERVED), host
    refused = ("attacker.example:8000", "localhost:8001", "localhost", "other.example", "", "token.place")
    for host in refused:
        assert not rules.host_allowed(host, SERVED), host
    assert rules.host_allowed("localhost", ("127.0.0.1", 80))  # the default port is left out by browsers


def test_origins_own_or_allowed() -> None:
    rules = SiteRules.of(cors_origins=["https://app.example.com"])
    assert rules.origin_allowed(None, "localhost:8000")
    assert rules.origin_allowed("http://localhost:8000", "localhost:8000")
    assert rules.origin_allowed("https://app.example.com", "localhost:8000")
    for origin in ("http://attacker.example", "null", "http://localhost:8001", "https://app.example.com:1"):
        assert not rules.origin_allowed(origin, "localhost:8000"), origin
    assert rules.cors_headers("http://attacker.example", preflight=True) == {}
    assert rules.cors_headers("http://localhost:8000", preflight=False) == {}, "same origin needs no CORS"
    preflight = rules.cors_headers("https://app.example.com", preflight=True)
    assert preflight["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Authorization" in preflight["Access-Control-Allow-Headers"]


def test_origin_argument_takes_origins_only() -> None:
    assert origin_argument("https://App.Example.com:8443/") == "https://app.example.com:8443"
    for bad in ("*", "null", "app.example.com", "https://app.example.com/path", "ftp://x", "http://a@b"):
        with pytest.raises(ValueError, match="not an origin"):
            origin_argument(bad)


def test_json_and_loopback() -> None:
    assert is_json("application/json") and is_json("Application/JSON; charset=utf-8")
    for other in (None, "", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        assert not is_json(other)
    assert (
        is_loopback("127.0.0.1")
        and is_loopback("127.8.0.1")
        and is_loopback("::1")
        and is_loopback("localhost")
    )
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "", "192.168.1.5", "gw.example.net"))


# --- the app --------------------------------------------------------------------------------------


async def test_a_simple_cross_site_post_is_refused_before_the_overlay_sees_it() -> None:
    overlay = MeteredOverlay()
    app = app_of(overlay)
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ):
        status, headers, body = await send(app, "POST", "/v1/chat/completions", **post_chat(content_type))
        assert status == 415 and body["error"]["code"] == "unsupported_media_type", content_type
        assert headers["Connection"] == "close", "the body stays unread: the connection cannot be reused"
    status, _, body = await send(app, "POST", "/v1/chat/completions", body=json.dumps(CHAT).encode())
    assert status == 415, "no Content-Type at all"
    assert overlay.documents == []
    status, _, body = await send(app, "POST", "/v1/chat/completions", **post_chat("application/json"))
    assert status == 200 and body["choices"][0]["message"]["content"]


async def test_a_foreign_host_is_misdirected_on_every_path() -> None:
    """DNS rebinding: the attacker's name resolves to 127.0.0.1, so the browser sends its own Host."""
    overlay = MeteredOverlay()
    app = app_of(overlay)
    for method, path in (
        ("GET", "/v1/models"),
        ("GET", "/v1/health"),
        ("GET", "/"),
        ("GET", "/static/chat.js"),
    ):
        status, _, body = await send(app, method, path, host=f"rebind.attacker.example:{PORT}")
        assert status == 421 and body["error"]["code"] == "host_not_allowed", path
    status, _, _ = await send(
        app, "POST", "/v1/chat/completions", host="token.place", **post_chat("application/json")
    )
    assert status == 421, "the in-process client's name is served in-process only"
    assert overlay.documents == []
    assert (await send(app, "GET", "/v1/models", host=f"localhost:{PORT}"))[0] == 200


async def test_a_foreign_origin_gets_no_cors_and_is_refused() -> None:
    overlay = MeteredOverlay()
    app = app_of(overlay)
    evil = {"Origin": "http://attacker.example"}
    status, headers, body = await send(app, "GET", "/v1/models", headers=evil)
    assert status == 403 and body["error"]["code"] == "origin_not_allowed"
    assert not any(name.lower().startswith("access-control-") for name, _ in headers.items())
    status, headers, _ = await send(app, "OPTIONS", "/v1/chat/completions", headers=evil)
    assert status == 403 and not any(
        name.lower().startswith("access-control-") for name, _ in headers.items()
    )
    own = {"Origin": f"http://127.0.0.1:{PORT}", "Content-Type": "application/json"}
    status, headers, _ = await send(
        app, "POST", "/v1/chat/completions", headers=own, body=json.dumps(CHAT).encode()
    )
    assert status == 200 and "Access-Control-Allow-Origin" not in headers


async def test_an_allowed_origin_gets_cors_headers() -> None:
    app = app_of(MeteredOverlay(), SiteRules.of(cors_origins=["https://app.example.com"]), api_key=KEY)
    origin = {"Origin": "https://app.example.com"}
    preflight = {**origin, "Access-Control-Request-Method": "POST"}
    status, headers, _ = await send(app, "OPTIONS", "/v1/chat/completions", headers=preflight)
    assert status == 204 and headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "POST" in headers["Access-Control-Allow-Methods"]
    asked = {**origin, "Authorization": f"Bearer {KEY}"}
    status, headers, _ = await send(app, "GET", "/v1/models", headers=asked)
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    status, headers, _ = await send(app, "GET", "/v1/models", headers=origin)
    assert status == 401 and headers["Access-Control-Allow-Origin"] == "https://app.example.com"


async def test_only_the_health_and_metrics_routes_skip_the_key() -> None:
    app = app_of(MeteredOverlay(), api_key=KEY)
    for path in ("/v1/health", "/v1/metrics", "/api/v1/health", "/api/v1/metrics", "/", "/static/chat.js"):
        assert (await send(app, "GET", path))[0] == 200, path
    for path in (
        "/v1/chat/completions/health",
        "/v1/models/health",
        "/v1/x/metrics",
        "/health",
        "/v1/models",
    ):
        status, _, body = await send(app, "GET", path)
        assert status == 401 and body["error"]["code"] == "invalid_api_key", path
    status, _, _ = await send(app, "POST", "/v1/chat/completions/health", **post_chat("application/json"))
    assert status == 401


# --- tp-gateway -----------------------------------------------------------------------------------


def args_of(*argv: str) -> Any:
    return cli.resolve_settings(cli.build_parser(), "gateway", list(argv))


def test_a_keyless_gateway_beyond_loopback_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TP_API_KEY", "TP_GATEWAY_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for listen in ("0.0.0.0:8000", "[::]:8000", "192.168.1.5:8000", "gw.example.net:8000"):
        error = cli.exposure_error(args_of("--listen", listen))
        assert error is not None and "--api-key" in error and cli.INSECURE_FLAG in error, listen
        assert cli.exposure_error(args_of("--listen", listen, "--api-key", KEY)) is None
        assert cli.exposure_error(args_of("--listen", listen, cli.INSECURE_FLAG)) is None
    for listen in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000"):
        assert cli.exposure_error(args_of("--listen", listen)) is None


def test_cors_origin_flag_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert args_of("--cors-origin", "https://app.example.com").cors_origin == ["https://app.example.com"]
    with pytest.raises(SystemExit):
        args_of("--cors-origin", "*")
    assert "not an origin" in capsys.readouterr().err
