"""Sealed mode through the real gateway app (tp_gateway.app, sealed_routes) and the Python clients
(tp_gateway.sealed_client, sealed_transport with the official OpenAI SDK), over a fake overlay that opens
and seals as a node does (tests/tp_gateway/sealed_fakes.py). The gateway is treated as hostile: it must see
only ciphertext, and a forged directory, a changed or cut-short answer are caught by the client."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any, cast

import httpx
import openai
import pytest
import trio

from tests.tp_gateway.sealed_fakes import MODEL, WORDS, SealingOverlay, Tamper
from tp_gateway.app import create_app
from tp_gateway.client import BASE_URL, IN_PROCESS_SITE, AsyncOverlayTransport, OverlayTransport
from tp_gateway.client_thread import OverlayThread, Service
from tp_gateway.openai_api import ApiError
from tp_gateway.public_guard import PublicPolicy
from tp_gateway.sealed_client import EVENT_LINE_BYTES_MAX, SealedEvents, SecureChatCompletion
from tp_gateway.sealed_transport import sealed_http_client
from tp_net.protocol.messages import REQUEST_BYTES_MAX
from tp_net.protocol.sealed import SEALED_REQUEST_BYTES_MAX, seal_request

SENTINEL = "sentinel-prompt-5d1e"
MESSAGES = [{"role": "user", "content": SENTINEL}]
WAIT_S = 10.0


class Gateway:
    def __init__(self, overlay: SealingOverlay) -> None:
        self.overlay = overlay
        self.bodies: list[bytes] = []

        async def open_service(nursery: trio.Nursery) -> Service:
            app = create_app(overlay, site=IN_PROCESS_SITE)
            return Service(app, overlay.ready, "not ready")

        self.thread = OverlayThread(open_service, ready_timeout_s=WAIT_S)
        self.thread.start()
        self.http = httpx.Client(
            transport=OverlayTransport(self.thread), timeout=WAIT_S, event_hooks={"request": [self._record]}
        )

    def _record(self, request: httpx.Request) -> None:
        self.bodies.append(request.content)

    def client(self, **kwargs: Any) -> SecureChatCompletion:
        return SecureChatCompletion(BASE_URL, http_client=self.http, **kwargs)

    def saw_plaintext(self) -> bool:
        seen = b"".join(self.bodies) + b"".join(self.overlay.forwarded)
        return SENTINEL.encode() in seen or b"Sealed hello" in seen


@pytest.fixture
def gateway_for() -> Iterator[Any]:
    made: list[Gateway] = []

    def make(tamper: Tamper | None = None, signers: int = 2, error: dict[str, str] | None = None) -> Gateway:
        made.append(Gateway(SealingOverlay(tamper=tamper, signers=signers, error=error)))
        return made[-1]

    yield make
    for gateway in made:
        gateway.http.close()


def test_create_answers_through_a_gateway_that_sees_only_ciphertext(gateway_for: Any) -> None:
    gateway = gateway_for()
    chat = gateway.client(bootstrap=gateway.overlay.bootstrap)
    answer = chat.create(model=MODEL, messages=MESSAGES, seed=1)
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == "".join(WORDS)
    assert gateway.overlay.documents[0]["messages"][0]["content"] == SENTINEL  # the node read it
    assert not gateway.saw_plaintext()


def test_create_streams_chunks(gateway_for: Any) -> None:
    gateway = gateway_for()
    chunks = list(
        gateway.client(bootstrap=gateway.overlay.bootstrap).create(
            model=MODEL, messages=MESSAGES, stream=True
        )
    )
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "".join(WORDS)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_acreate_answers_and_streams(gateway_for: Any) -> None:
    gateway = gateway_for()
    async with httpx.AsyncClient(transport=AsyncOverlayTransport(gateway.thread), timeout=WAIT_S) as http:
        chat = SecureChatCompletion(BASE_URL, bootstrap=gateway.overlay.bootstrap, async_http_client=http)
        answer = await chat.acreate(model=MODEL, messages=MESSAGES)
        assert isinstance(answer, dict)
        assert answer["choices"][0]["message"]["content"] == "".join(WORDS)
        chunks = await chat.acreate(model=MODEL, messages=MESSAGES, stream=True)
        assert not isinstance(chunks, dict)
        text = "".join([c["choices"][0]["delta"].get("content") or "" async for c in chunks if c["choices"]])
    assert text == "".join(WORDS)
    assert not gateway.saw_plaintext()


def test_without_a_bootstrap_file_the_client_takes_the_gateways(gateway_for: Any) -> None:
    gateway = gateway_for()
    answer = gateway.client().create(model=MODEL, messages=MESSAGES)
    assert answer["choices"][0]["message"]["content"] == "".join(WORDS)


def test_a_directory_without_enough_trusted_signatures_is_refused(gateway_for: Any) -> None:
    gateway = gateway_for(signers=1)
    with pytest.raises(ApiError) as refused:
        gateway.client(bootstrap=gateway.overlay.bootstrap).create(model=MODEL, messages=MESSAGES)
    assert refused.value.code == "bad_directory"
    assert gateway.overlay.forwarded == []  # nothing was sealed to a node the client could not check


def flip(chunks: list[bytes]) -> list[bytes]:
    changed = bytearray(chunks[1])
    changed[3] ^= 1
    return [chunks[0], bytes(changed), *chunks[2:]]


@pytest.mark.parametrize(
    "tamper",
    [flip, lambda c: c[:-1], lambda c: [c[0], c[2], c[1], *c[3:]], lambda c: [c[0], *c[2:]]],
    ids=["changed", "final dropped", "reordered", "one dropped"],
)
def test_a_gateway_that_changes_the_answer_is_caught(gateway_for: Any, tamper: Tamper) -> None:
    gateway = gateway_for(tamper=tamper)
    with pytest.raises(ApiError) as caught:
        gateway.client(bootstrap=gateway.overlay.bootstrap).create(model=MODEL, messages=MESSAGES)
    assert caught.value.status == 502


def test_the_nodes_errors_are_sealed_and_arrive_as_api_errors(gateway_for: Any) -> None:
    gateway = gateway_for(error={"code": "overloaded", "message": "every slot is busy"})
    with pytest.raises(ApiError) as refused:
        gateway.client(bootstrap=gateway.overlay.bootstrap).create(model=MODEL, messages=MESSAGES)
    assert (refused.value.status, refused.value.code) == (429, "overloaded")
    assert b"overloaded" not in b"".join(gateway.overlay.answered)  # the gateway did not see why


def test_the_official_openai_sdk_works_unchanged_in_sealed_mode(gateway_for: Any) -> None:
    gateway = gateway_for()
    http = sealed_http_client(BASE_URL, bootstrap=gateway.overlay.bootstrap, upstream=gateway.http)
    client = openai.OpenAI(base_url=BASE_URL, api_key="unused", http_client=cast(Any, http), max_retries=0)
    answer = client.chat.completions.create(model=MODEL, messages=cast(Any, MESSAGES))
    assert answer.choices[0].message.content == "".join(WORDS)
    stream = client.chat.completions.create(model=MODEL, messages=cast(Any, MESSAGES), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "".join(WORDS)
    assert [m.id for m in client.models.list()] == [MODEL]
    assert not gateway.saw_plaintext()


async def test_the_gateway_refuses_a_request_for_another_node_before_forwarding_it() -> None:
    overlay = SealingOverlay()
    sealed = seal_request(bytes(32), overlay.key.public, {"messages": MESSAGES}, time.time())
    body = json.dumps({"node": overlay.node_id.hex(), "sealed": base64.b64encode(sealed.data).decode()})
    status, _, answer = await send(
        create_app(overlay), "POST", "/v1/sealed", headers=JSON, body=body.encode()
    )
    assert (status, answer["error"]["code"]) == (400, "sealed_wrong_node")
    assert overlay.forwarded == []


def test_event_lines_are_bounded_before_they_are_buffered_and_may_arrive_in_pieces() -> None:
    overlay = SealingOverlay()
    request = seal_request(overlay.node_id, overlay.key.public, {"messages": MESSAGES}, time.time())
    events = SealedEvents(request)
    assert events.feed(b": a comm") == [] and events.feed(b"ent\n") == []  # a line in two pieces
    with pytest.raises(ApiError):
        SealedEvents(request).feed(b"data: not json\n")
    with pytest.raises(ApiError) as refused:
        for _ in range(EVENT_LINE_BYTES_MAX // 1000 + 1):
            events.feed(b"x" * 1000)  # a line that never ends
    assert refused.value.status == 502


def test_the_largest_sealed_request_fits_the_gateways_body_limit() -> None:
    body = json.dumps(
        {"node": "00" * 32, "sealed": base64.b64encode(bytes(SEALED_REQUEST_BYTES_MAX)).decode()}
    )
    assert len(body) <= REQUEST_BYTES_MAX


# --- tp-gateway --public --------------------------------------------------------------------------------

FOREIGN = ("203.0.113.7", 40000)
LOOPBACK = ("127.0.0.1", 40000)


async def send(
    app: Any,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    client: tuple[str, int] = LOOPBACK,
) -> tuple[int, Any, Any]:
    """One request as hypercorn hands it over, from `client` (its address), to the gateway on 127.0.0.1."""
    response = await app.test_client().open(
        path,
        method=method,
        headers={"Host": "127.0.0.1:8000", **(headers or {})},
        data=body,
        scope_base={"server": ("127.0.0.1", 8000), "client": client},
    )
    data = await response.get_data()
    try:
        return response.status_code, response.headers, json.loads(data)
    except ValueError:
        return response.status_code, response.headers, data


CHAT = json.dumps({"model": MODEL, "messages": MESSAGES}).encode()
JSON = {"Content-Type": "application/json"}


def public_app(policy: PublicPolicy | None = None) -> Any:
    return create_app(SealingOverlay(), public=policy or PublicPolicy())


async def test_public_gateway_refuses_plaintext_to_other_machines_and_serves_its_operator() -> None:
    app = public_app()
    status, _, body = await send(app, "POST", "/v1/chat/completions", headers=JSON, body=CHAT, client=FOREIGN)
    assert (status, body["error"]["code"]) == (403, "plaintext_refused")
    status, _, _ = await send(app, "GET", "/v1/models", client=FOREIGN)
    assert status == 200


async def test_public_sealed_routes_answer_any_origin_and_nothing_else_does() -> None:
    app = public_app()
    foreign = {"Origin": "https://elsewhere.example"}
    status, headers, _ = await send(app, "GET", "/v1/sealed/directory", headers=foreign, client=FOREIGN)
    assert (status, headers["Access-Control-Allow-Origin"]) == (200, "*")
    status, headers, _ = await send(app, "OPTIONS", "/v1/sealed", headers=foreign, client=FOREIGN)
    assert status == 204 and headers["Access-Control-Allow-Origin"] == "*"
    status, _, body = await send(app, "GET", "/v1/models", headers=foreign, client=FOREIGN)
    assert (status, body["error"]["code"]) == (403, "origin_not_allowed")
    plain = create_app(SealingOverlay())
    status, _, _ = await send(plain, "GET", "/v1/sealed/directory", headers=foreign)
    assert status == 403  # without --public the sealed routes follow the site's origin rules


async def test_public_sealed_requests_are_rate_limited_per_address() -> None:
    app = public_app(PublicPolicy(rate_per_s=0.001, burst=2))
    bad = json.dumps({"node": "00" * 32, "sealed": ""}).encode()

    async def post(client: tuple[str, int]) -> int:
        status, _, _ = await send(app, "POST", "/v1/sealed", headers=JSON, body=bad, client=client)
        return int(status)

    assert [await post(FOREIGN) for _ in range(3)] == [400, 400, 429]
    assert await post(("198.51.100.1", 1)) == 400  # another address has its own bucket
    assert await post(("127.0.0.1", 1)) == 400  # the operator is not limited


def test_the_policys_address_buckets_are_bounded() -> None:
    policy = PublicPolicy(addresses_max=3)
    for index in range(10):
        policy.check("v1.sealed", "POST", f"198.51.100.{index}", 0.0)
    assert policy.addresses == 3


def test_ipv6_addresses_share_their_64s_bucket() -> None:
    policy = PublicPolicy(rate_per_s=0.001, burst=1)
    assert policy.check("v1.sealed", "POST", "2001:db8::1", 0.0) is None
    refused = policy.check("v1.sealed", "POST", "2001:db8::2", 0.0)
    assert refused is not None and refused.status == 429
