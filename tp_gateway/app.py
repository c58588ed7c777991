"""The OpenAI-compatible HTTP API (QuartTrio), under /v1 and /api/v1, and the same API under /v2 and /api/v2
(the routes token.place's clients call). Model aliases (gateway configuration: a stable name for a model the
network serves) are listed with the models and resolved before a request leaves.

Requests are validated and translated by tp_gateway.openai_* (sans-IO); this module reads bodies, checks
the API key, calls the overlay, and writes JSON or server-sent events. Errors before the first token get a
proper status code; a failure after it ends the event stream with an error event. A client that goes away
closes the response generator, which cancels the stream on the circuit, which stops the node.
"""

from __future__ import annotations

import hmac
import importlib.metadata
import json
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any

import trio
from quart import Blueprint, Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from tp_gateway import metrics as metrics_text
from tp_gateway.http_guard import SiteRules, is_json, misdirected, not_json, origin_refused
from tp_gateway.inference_overlay import InferenceOverlay
from tp_gateway.isolation import api_key_isolation, bearer_token
from tp_gateway.metrics import Metrics
from tp_gateway.openai_api import (
    SSE_DONE,
    ApiCall,
    ApiError,
    ChatCompletionCollector,
    ChatCompletionStream,
    CompletionCollector,
    CompletionStream,
    EmbeddingCall,
    body_too_large,
    embeddings_response,
    invalid_api_key,
    invalid_json,
    json_bytes,
    model_list,
    model_not_found,
    model_object,
    no_capacity,
    node_error_to_api,
    parse_chat,
    parse_completion,
    parse_embedding,
    sse_error,
    sse_event,
    unknown_route,
    upstream_failure,
)
from tp_gateway.openai_errors import model_gone, network_cannot_serve
from tp_gateway.overlay import NOT_SERVABLE_CODES, OverlayError
from tp_gateway.public_guard import PUBLIC_CORS_HEADERS, SEALED_VIEWS, PublicPolicy, view_of
from tp_gateway.sealed_routes import add_sealed_routes
from tp_net.protocol.messages import REQUEST_BYTES_MAX
from tp_net.trio import message_trace

log = logging.getLogger(__name__)

LOOPBACK_ONLY = SiteRules()
# The only routes without the API key: the chat page and its files (the page asks for the key), and the
# health and metrics routes under /v1 and /api/v1 (what docs/PROTOCOL.md promises), by endpoint name.
API_PREFIXES = {"v1": "/v1", "api_v1": "/api/v1", "v2": "/v2", "api_v2": "/api/v2"}  # blueprint: URL prefix
SERVICE_NAME = "tp-gateway"
KEYLESS_ENDPOINTS = frozenset(
    {"chat_page", "static"} | {f"{name}.{view}" for name in API_PREFIXES for view in ("health", "metrics")}
)
Stream = ChatCompletionStream | CompletionStream
Collector = ChatCompletionCollector | CompletionCollector
# The chat page at / (tp_gateway/static): public like any static file, its own scripts only, no other origin.
CHAT_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def api_error(error: OverlayError, model: str) -> ApiError:
    if error.code == "model_not_found":
        return model_not_found(model)
    if error.code == "model_gone":
        return model_gone(model, error.retry_after_s)
    if error.code == "unavailable":
        return no_capacity()
    if error.code in NOT_SERVABLE_CODES:
        return network_cannot_serve(error.code, str(error))
    if error.code == "upstream":
        return upstream_failure(str(error))
    return node_error_to_api(error.code, str(error))


def create_app(
    overlay: InferenceOverlay,
    *,
    site: SiteRules = LOOPBACK_ONLY,
    api_key: str | None = None,
    metrics: Metrics | None = None,
    aliases: Mapping[str, str] | None = None,
    public: PublicPolicy | None = None,
) -> QuartTrio:
    """The app; `site` says which Host and Origin values it answers (default: loopback, no CORS);
    `aliases` maps alias -> model id; `public` (tp-gateway --public) opens the sealed routes to every
    origin and keeps the plaintext ones for loopback clients."""
    app = QuartTrio(__name__)
    # The node refuses requests over REQUEST_BYTES_MAX; refusing larger bodies here gives the client a 413.
    app.config["MAX_CONTENT_LENGTH"] = REQUEST_BYTES_MAX
    app.config["SEND_FILE_MAX_AGE_DEFAULT"] = None  # the chat page's files: revalidated, so upgrades show
    counters = metrics or Metrics()
    routes = _Routes(overlay, counters, dict(aliases or {}))
    api = Blueprint("v1", __name__)
    api.add_url_rule("/models", view_func=routes.models, methods=["GET"])
    api.add_url_rule("/models/<path:model_id>", view_func=routes.model, methods=["GET"])
    api.add_url_rule("/chat/completions", view_func=routes.chat, methods=["POST"])
    api.add_url_rule("/completions", view_func=routes.completions, methods=["POST"])
    api.add_url_rule("/embeddings", view_func=routes.embeddings, methods=["POST"])
    api.add_url_rule("/health", view_func=routes.health, methods=["GET"])
    api.add_url_rule("/metrics", view_func=routes.metrics, methods=["GET"])
    add_sealed_routes(api, overlay)
    for name, prefix in API_PREFIXES.items():
        app.register_blueprint(api, url_prefix=prefix, name=name)

    @app.get("/")
    async def chat_page() -> Response:
        page = await app.send_static_file("index.html")
        page.headers.update(CHAT_PAGE_HEADERS)
        return page

    @app.before_request
    async def guard() -> Response | None:
        """Host, then Origin (every path), then the key (all but the page and health/metrics), then a
        JSON body (POST): each refused before any work."""
        host = request.headers.get("Host", "")
        if not site.host_allowed(host, request.scope.get("server")):
            return _refusal(misdirected(host))
        answered = _cross_site(site, public, host)
        if answered is not None:
            return answered
        if api_key is not None and request.endpoint not in KEYLESS_ENDPOINTS:
            offered = bearer_token(request.headers.get("Authorization"))
            if not hmac.compare_digest(offered.encode(), api_key.encode()):
                return _refusal(invalid_api_key())
        if request.method == "POST" and not is_json(request.headers.get("Content-Type")):
            return _refusal(not_json())
        return None

    @app.errorhandler(ApiError)
    async def on_api_error(error: ApiError) -> Response:
        return _error_response(error)

    @app.errorhandler(HTTPException)
    async def on_http_error(error: HTTPException) -> Response:
        if isinstance(error, RequestEntityTooLarge):
            return _refusal(body_too_large(REQUEST_BYTES_MAX))
        if error.code == 404:
            return _error_response(unknown_route(request.method, request.path))
        status = error.code or 500
        return _error_response(ApiError(status, error.description or "HTTP error"))

    @app.after_request
    async def count(response: Response) -> Response:
        counters.count_request(request.url_rule.rule if request.url_rule else "unknown", response.status_code)
        if public is not None and view_of(request.endpoint) in SEALED_VIEWS:
            response.headers["Access-Control-Allow-Origin"] = "*"
        else:
            response.headers.update(site.cors_headers(request.headers.get("Origin"), preflight=False))
        return response

    return app


def _cross_site(site: SiteRules, public: PublicPolicy | None, host: str) -> Response | None:
    """The Origin rule and preflights; with `public`, sealed routes for every origin, and the public policy
    (plaintext routes for loopback clients only, rate limits per address)."""
    origin = request.headers.get("Origin")
    open_to_all = public is not None and view_of(request.endpoint) in SEALED_VIEWS
    if not open_to_all and not site.origin_allowed(origin, host):
        return _refusal(origin_refused())
    if request.method == "OPTIONS" and origin is not None:
        headers = PUBLIC_CORS_HEADERS if open_to_all else site.cors_headers(origin, preflight=True)
        return Response(b"", status=204, headers=headers)
    if public is not None:
        client = request.scope.get("client")
        refused = public.check(
            request.endpoint, request.method, client[0] if client else None, time.monotonic()
        )
        if refused is not None:
            return _refusal(refused)
    return None


def _error_response(error: ApiError) -> Response:
    response = Response(json_bytes(error.to_json()), status=error.status, mimetype="application/json")
    if error.retry_after_s is not None:
        response.headers["Retry-After"] = str(error.retry_after_s)
    return response


def _refusal(error: ApiError) -> Response:
    """An error answered before the request body is read: the rest of it stays unread, so the connection
    closes (a client reusing it would wait forever)."""
    response = _error_response(error)
    response.headers["Connection"] = "close"
    return response


def _json_response(obj: dict[str, Any]) -> Response:
    return Response(json_bytes(obj), mimetype="application/json")


async def _body() -> object:
    data = await request.get_data(cache=False)
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise invalid_json() from None


def _version() -> str:
    try:
        return importlib.metadata.version("token-place")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class _Routes:
    def __init__(self, overlay: InferenceOverlay, metrics: Metrics, aliases: dict[str, str]) -> None:
        self._overlay = overlay
        self._metrics = metrics
        self._aliases = aliases
        self._version = _version()

    def _listed(self) -> dict[str, int]:
        """{model id or alias: created} for the models the network serves now, and aliases of them."""
        ids = self._overlay.model_ids()
        listed = {m: self._overlay.model_created(m) for m in ids}
        for alias, target in self._aliases.items():
            if target in ids and alias not in listed:
                listed[alias] = listed[target]
        return listed

    def _identity(self, model_id: str) -> dict[str, Any] | None:
        """The GGUF a listed model id (or alias) stands for, and how many nodes offer the id with another."""
        identity = self._overlay.model_identity(self._aliases.get(model_id, model_id))
        if identity is None:
            return None
        return {
            "gguf_sha256": identity.gguf_sha256.hex(),
            "gguf_sha256_source": identity.source,
            "nodes": identity.nodes,
            "conflicting_nodes": identity.conflicting_nodes,
        }

    async def models(self) -> Response:
        listed = self._listed()
        return _json_response(model_list(listed, {m: i for m in listed if (i := self._identity(m))}))

    async def model(self, model_id: str) -> Response:
        listed = self._listed()
        if model_id not in listed:
            raise model_not_found(model_id)
        return _json_response(model_object(model_id, listed[model_id], self._identity(model_id)))

    def _resolved(self, call: ApiCall) -> tuple[str, dict[str, Any]]:
        """(the model id to ask the network for, the node document naming it): aliases resolved."""
        model = self._aliases.get(call.model, call.model)
        return model, {**call.document(), "model": model}

    def _ask(self, call: ApiCall) -> AsyncGenerator[dict[str, Any], None]:
        """The overlay's answer to `call`, on circuits of this request's API key only (isolation)."""
        isolation = api_key_isolation(request.headers.get("Authorization"))
        return self._overlay.generate(*self._resolved(call), isolation=isolation)

    async def health(self) -> Response:
        ready = self._overlay.ready.is_set()
        body: dict[str, Any] = {
            "status": "ok" if ready else "starting",
            "version": self._version,
            "service": SERVICE_NAME,
            "timestamp": int(time.time()),
            "models": len(self._overlay.model_ids()),
        }
        body["pooled_circuits"] = self._overlay.pooled_circuits
        return Response(json_bytes(body), status=200 if ready else 503, mimetype="application/json")

    async def metrics(self) -> Response:
        stats = self._overlay.stats
        gauges = [
            (
                "tp_gateway_pooled_circuits",
                "Warm circuits in the pool.",
                float(self._overlay.pooled_circuits),
            ),
            ("tp_gateway_circuits_built", "Circuits built so far.", float(stats.circuits_built)),
            (
                "tp_gateway_circuit_build_failures",
                "Circuit builds that failed.",
                float(stats.circuit_build_failures),
            ),
            ("tp_gateway_models", "Models in the current directory.", float(len(self._overlay.model_ids()))),
        ]
        return Response(metrics_text.render(self._metrics, gauges), mimetype="text/plain; version=0.0.4")

    async def chat(self) -> Response:
        message_trace.mark("gw_http_in")
        call = parse_chat(await _body())
        return await self._generate(call, ChatCompletionStream, ChatCompletionCollector, "chatcmpl-")

    async def completions(self) -> Response:
        call = parse_completion(await _body())
        return await self._generate(call, CompletionStream, CompletionCollector, "cmpl-")

    async def embeddings(self) -> Response:
        call = parse_embedding(await _body())
        return _json_response(await self._embed(call))

    async def _embed(self, call: EmbeddingCall) -> dict[str, Any]:
        chunks: list[object] = []
        try:
            async with aclosing(self._ask(call)) as stream:
                async for chunk in stream:
                    chunks.append(chunk)
        except OverlayError as exc:
            raise api_error(exc, call.model) from None
        return embeddings_response(
            call.model, chunks, encoding_format=call.encoding_format, input_count=call.input_count
        )

    async def _generate(
        self,
        call: ApiCall,
        make_stream: type[Stream],
        make_collector: type[Collector],
        id_prefix: str,
    ) -> Response:
        completion_id, created = id_prefix + secrets.token_hex(12), int(time.time())
        started = time.monotonic()
        chunks = self._ask(call)
        try:
            first = await chunks.__anext__()
        except OverlayError as exc:
            await chunks.aclose()
            raise api_error(exc, call.model) from None
        except StopAsyncIteration:
            raise upstream_failure("the node sent no answer") from None
        except BaseException:  # cancelled before the first token (the client left): stop the node now
            with trio.CancelScope(shield=True):
                await chunks.aclose()
            raise
        message_trace.mark("gw_first_chunk")
        self._metrics.observe_first_token(time.monotonic() - started)
        if call.stream:
            events = _events(
                make_stream(
                    call.model,
                    completion_id,
                    created,
                    call.include_usage,
                    choices=call.choices,
                    top_logprobs=call.top_logprobs,
                ),
                first,
                chunks,
                call,
            )
            response = Response(events, mimetype="text/event-stream")
            response.timeout = None  # answers can take minutes
            return response
        collector = make_collector(
            call.model, completion_id, created, choices=call.choices, top_logprobs=call.top_logprobs
        )
        await _collect(collector, first, chunks, call)
        return _json_response(collector.result())


async def _collect(
    collector: Collector, first: object, chunks: AsyncGenerator[dict[str, Any], None], call: ApiCall
) -> None:
    async with aclosing(chunks):
        collector.feed(first)
        try:
            async for chunk in chunks:
                collector.feed(chunk)
        except OverlayError as exc:
            raise api_error(exc, call.model) from None


async def _events(
    builder: Stream, first: object, chunks: AsyncGenerator[dict[str, Any], None], call: ApiCall
) -> AsyncGenerator[bytes, None]:
    message_trace.mark("gw_body_start")
    async with aclosing(chunks):
        try:
            # One write per node chunk: its events leave together (each write costs hypercorn ~0.1 ms).
            head = b"".join(sse_event(obj) for obj in builder.feed(first))
            message_trace.mark("gw_first_yield")
            yield head
            async for chunk in chunks:
                events = builder.feed(chunk)
                if events:
                    yield b"".join(sse_event(obj) for obj in events)
        except OverlayError as exc:
            yield sse_error(api_error(exc, call.model))
            return
        except ApiError as exc:
            yield sse_error(exc)
            return
    yield SSE_DONE
