"""A sealed-request client (PROTOCOL.md 9) for a gateway somebody else runs: the gateway carries the request
and the answer, and reads neither.

    from tp_gateway.sealed_client import SecureChatCompletion
    chat = SecureChatCompletion(base_url="https://gateway.example/v1", bootstrap="network/bootstrap.json")
    answer = chat.create(model="tiny", messages=[{"role": "user", "content": "hello"}])
    for chunk in chat.create(model="tiny", messages=[...], stream=True): ...

`create` and `acreate` take the OpenAI chat-completion fields and return OpenAI-shaped dicts (or, with
`stream=True`, an iterator of `chat.completion.chunk` dicts); `send(kind, ...)` and `asend` do the same for
every kind a node answers sealed (KIND_SHAPES, keyed by the contract's KINDS; embeddings never stream).
The client fetches the signed directory from the gateway and verifies it against the authorities of *its
own* bootstrap file (without one, it takes the gateway's bootstrap file: trust on first use); it picks the
node, seals the request to the node's key, and opens the sealed answer. `sealed_http_client(...)` gives the
official OpenAI SDK the same, unchanged:
`OpenAI(base_url=REMOTE, api_key=..., http_client=sealed_http_client(REMOTE, bootstrap=...))`.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from tp_gateway.openai_api import (
    ApiCall,
    ApiError,
    ChatCompletionCollector,
    ChatCompletionStream,
    CompletionCollector,
    CompletionStream,
    EmbeddingCall,
    embeddings_response,
    parse_chat,
    parse_completion,
    parse_embedding,
)
from tp_gateway.openai_errors import node_error_to_api, upstream_failure
from tp_net.protocol.bootstrap_config import Bootstrap, load_bootstrap, parse_bootstrap
from tp_net.protocol.descriptors import NodeDescriptor
from tp_net.protocol.directory import Directory, SignedDocument, Trust, verify_document
from tp_net.protocol.model_identity import catalogue_pins, model_identities, nodes_serving
from tp_net.protocol.path_selection import choose_node
from tp_net.protocol.sealed import ResponseOpener, SealedError, SealedRequest, seal_request

TIMEOUT_S = 120.0
# Bytes of one event line the client takes from a gateway (a sealed chunk is at most 64 KiB, base64 4/3).
EVENT_LINE_BYTES_MAX = 128 * 1024
# Bytes of a directory document (or any other answer read whole) the client takes from a gateway.
DIRECTORY_BYTES_MAX = 8 * 1024 * 1024 + 64 * 1024


Answer = dict[str, Any] | Iterator[dict[str, Any]]
AsyncAnswer = dict[str, Any] | AsyncIterator[dict[str, Any]]


class Collector(Protocol):
    def feed(self, document: object) -> None: ...
    def result(self) -> dict[str, Any]: ...


class EmbeddingCollector:
    """An embeddings answer: at most one message per input and the final one, refused before it is kept."""

    def __init__(self, call: EmbeddingCall) -> None:
        self._call = call
        self._messages: list[object] = []

    def feed(self, document: object) -> None:
        if len(self._messages) > self._call.input_count:
            raise upstream_failure("the node sent more embeddings than inputs")
        self._messages.append(document)

    def result(self) -> dict[str, Any]:
        call = self._call
        return embeddings_response(
            call.model, self._messages, encoding_format=call.encoding_format, input_count=call.input_count
        )


@dataclass(frozen=True)
class Kind:
    """A kind of request a node answers sealed: how its fields are read and its answer is built (as the
    gateway's own routes build it, tp_gateway.app)."""

    parse: Callable[[object], ApiCall]
    id_prefix: str
    stream: type[ChatCompletionStream] | type[CompletionStream] | None  # None: answered whole only
    collector: type[ChatCompletionCollector] | type[CompletionCollector] | None  # None: embeddings

    def collect(self, call: ApiCall) -> Collector:
        if self.collector is None:
            assert isinstance(call, EmbeddingCall)
            return EmbeddingCollector(call)
        completion_id, created = self.id_prefix + secrets.token_hex(12), int(time.time())
        return self.collector(
            call.model, completion_id, created, choices=call.choices, top_logprobs=call.top_logprobs
        )

    def streamer(self, call: ApiCall) -> ChatCompletionStream | CompletionStream:
        assert self.stream is not None  # parse refuses `stream` for the kinds without one
        completion_id, created = self.id_prefix + secrets.token_hex(12), int(time.time())
        return self.stream(
            call.model,
            completion_id,
            created,
            call.include_usage,
            choices=call.choices,
            top_logprobs=call.top_logprobs,
        )


# How each request kind of the inference contract (tp_net.protocol.inference_contract.KINDS) is parsed and
# answered in OpenAI's shape.
KIND_SHAPES = {
    "chat": Kind(parse_chat, "chatcmpl-", ChatCompletionStream, ChatCompletionCollector),
    "completion": Kind(parse_completion, "cmpl-", CompletionStream, CompletionCollector),
    "embedding": Kind(parse_embedding, "", None, None),
}


@dataclass(frozen=True)
class _Prepared:
    call: ApiCall
    kind: Kind
    request: SealedRequest
    body: bytes


class SealedEvents:
    """Sans-IO: the gateway's event stream in (bytes as they come), the node's response messages out, each
    opened in order; a node's error message becomes its ApiError, a broken seal, an over-long line or a
    cut-short answer a 502. A line is bounded before it is buffered."""

    def __init__(self, request: SealedRequest) -> None:
        self._opener = ResponseOpener(request)
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while data:
            line, newline, data = data.partition(b"\n")
            if len(self._buffer) + len(line) > EVENT_LINE_BYTES_MAX:
                raise upstream_failure("the gateway sent an over-long event")
            self._buffer += line
            if newline:
                messages += self.line(self._buffer.decode(errors="replace").rstrip("\r"))
                self._buffer.clear()
        return messages

    def line(self, line: str) -> list[dict[str, Any]]:
        if not line.startswith("data: "):
            return []
        try:
            event = json.loads(line[len("data: ") :])
        except ValueError:
            raise upstream_failure("the gateway sent a malformed event") from None
        if not isinstance(event, dict):
            raise upstream_failure("the gateway sent a malformed event")
        if "error" in event:  # the gateway's own error event (the node's errors are sealed)
            refusal = event["error"] if isinstance(event["error"], dict) else {}
            code, text = refusal.get("code") or "upstream_error", refusal.get("message") or ""
            raise ApiError(502, f"The gateway failed the sealed request: {text}", code=str(code))
        try:
            message = self._opener.open(base64.b64decode(event["chunk"], validate=True))
        except SealedError as exc:
            raise upstream_failure(f"the sealed answer does not open ({exc.code})") from None
        except (KeyError, TypeError, ValueError):
            raise upstream_failure("the gateway sent a malformed event") from None
        if message is None:
            return []
        if not isinstance(message, dict):
            raise upstream_failure("the node sent a malformed answer")
        error = message.get("error")
        if isinstance(error, dict):
            raise node_error_to_api(str(error.get("code")), str(error.get("message")))
        return [message]

    def finish(self) -> None:
        if self._buffer:
            self.feed(b"\n")
        try:
            self._opener.finish()
        except SealedError:
            raise upstream_failure("the sealed answer was cut short") from None


class SecureChatCompletion:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        bootstrap: Bootstrap | Path | str | None = None,
        timeout_s: float = TIMEOUT_S,
        http_client: httpx.Client | None = None,
        async_http_client: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = http_client or httpx.Client(timeout=timeout_s)
        self._async_http = async_http_client or httpx.AsyncClient(timeout=timeout_s)
        self._headers = headers
        self._trust = _trust_of(bootstrap)
        self._rng = rng or random.Random(secrets.randbits(64))
        self._directory: Directory | None = None

    # --- sync -----------------------------------------------------------------------------------------

    def create(self, **params: Any) -> Answer:
        """A chat completion, sealed."""
        return self.send("chat", params)

    def send(self, kind: str, params: dict[str, Any]) -> Answer:
        """A request of `kind` (KIND_SHAPES) with the OpenAI fields `params`, sealed; its OpenAI answer."""
        prepared = self._call(kind, params)
        if self._trust is None:
            self._trust = self._bootstrap_from_gateway(self._get("/sealed/bootstrap"))
        if self._stale():
            self._directory = self._verify(self._get("/sealed/directory"))
        messages = self._messages(self._prepare(*prepared))
        call, chosen = prepared
        if not call.stream:
            collector = chosen.collect(call)
            for message in messages:
                collector.feed(message)
            return collector.result()
        first = next(messages, None)  # a failure before the first chunk raises here, as an HTTP error would
        return self._stream(chosen.streamer(call), first, messages)

    def _get(self, path: str) -> bytes:
        with self._http.stream("GET", self.base_url + path, headers=self._headers) as response:
            body = bytearray()
            for data in response.iter_bytes():
                _append_capped(body, data)
        _raise_for(response.status_code, bytes(body))
        return bytes(body)

    def _messages(self, prepared: _Prepared) -> Iterator[dict[str, Any]]:
        events = SealedEvents(prepared.request)
        with self._http.stream(
            "POST", self.base_url + "/sealed", content=prepared.body, headers=self._post
        ) as r:
            if r.status_code != 200:
                body = bytearray()
                for data in r.iter_bytes():
                    _append_capped(body, data)
                _raise_for(r.status_code, bytes(body))
            for data in r.iter_bytes():
                yield from events.feed(data)
        events.finish()

    def _stream(
        self,
        builder: ChatCompletionStream | CompletionStream,
        first: dict[str, Any] | None,
        messages: Iterator[dict[str, Any]],
    ) -> Iterator[dict[str, Any]]:
        if first is not None:
            yield from builder.feed(first)
        for message in messages:
            yield from builder.feed(message)

    # --- async ----------------------------------------------------------------------------------------

    async def acreate(self, **params: Any) -> AsyncAnswer:
        """A chat completion, sealed."""
        return await self.asend("chat", params)

    async def asend(self, kind: str, params: dict[str, Any]) -> AsyncAnswer:
        """`send`, for async code."""
        prepared = self._call(kind, params)
        if self._trust is None:
            self._trust = self._bootstrap_from_gateway(await self._aget("/sealed/bootstrap"))
        if self._stale():
            self._directory = self._verify(await self._aget("/sealed/directory"))
        messages = self._amessages(self._prepare(*prepared))
        call, chosen = prepared
        if call.stream:
            first = await anext(messages, None)  # a failure before the first chunk raises here
            return self._astream(chosen.streamer(call), first, messages)
        collector = chosen.collect(call)
        async for message in messages:
            collector.feed(message)
        return collector.result()

    async def _aget(self, path: str) -> bytes:
        async with self._async_http.stream("GET", self.base_url + path, headers=self._headers) as response:
            body = bytearray()
            async for data in response.aiter_bytes():
                _append_capped(body, data)
        _raise_for(response.status_code, bytes(body))
        return bytes(body)

    async def _amessages(self, prepared: _Prepared) -> AsyncIterator[dict[str, Any]]:
        events = SealedEvents(prepared.request)
        url = self.base_url + "/sealed"
        async with self._async_http.stream("POST", url, content=prepared.body, headers=self._post) as r:
            if r.status_code != 200:
                body = bytearray()
                async for data in r.aiter_bytes():
                    _append_capped(body, data)
                _raise_for(r.status_code, bytes(body))
            async for data in r.aiter_bytes():
                for message in events.feed(data):
                    yield message
        events.finish()

    async def _astream(
        self,
        builder: ChatCompletionStream | CompletionStream,
        first: dict[str, Any] | None,
        messages: AsyncIterator[dict[str, Any]],
    ) -> AsyncIterator[dict[str, Any]]:
        if first is not None:
            for obj in builder.feed(first):
                yield obj
        async for message in messages:
            for obj in builder.feed(message):
                yield obj

    # --- shared, sans-IO ------------------------------------------------------------------------------

    @property
    def _post(self) -> dict[str, str]:
        return {**self._headers, "Content-Type": "application/json"}

    def _stale(self) -> bool:
        return self._directory is None or time.time() >= self._directory.fresh_until

    def _bootstrap_from_gateway(self, data: bytes) -> Trust:
        return parse_bootstrap(json.loads(data), "the gateway's bootstrap").trust()

    def _verify(self, data: bytes) -> Directory:
        assert self._trust is not None
        try:
            return verify_document(SignedDocument.decode(data), self._trust, time.time())
        except Exception as exc:  # whatever the gateway sent: it is refused, and said why
            raise ApiError(
                502, f"The gateway's directory does not verify: {exc}", code="bad_directory"
            ) from None

    @staticmethod
    def _call(kind: str, params: dict[str, Any]) -> tuple[ApiCall, Kind]:
        """The call `params` make (an ApiError 400 before anything is sent when they are invalid)."""
        if kind not in KIND_SHAPES:
            raise ValueError(f"kind must be one of {sorted(KIND_SHAPES)}")
        return KIND_SHAPES[kind].parse(params), KIND_SHAPES[kind]

    def _prepare(self, call: ApiCall, kind: Kind) -> _Prepared:
        assert self._directory is not None
        node = choose_sealed_node(self._directory, call.model, self._rng)
        request = seal_request(node.node_id, node.sealing_keys[0], call.document(), time.time())
        body = json.dumps({"node": node.node_id.hex(), "sealed": base64.b64encode(request.data).decode()})
        return _Prepared(call, kind, request, body.encode())

    def close(self) -> None:
        self._http.close()

    async def aclose(self) -> None:
        await self._async_http.aclose()


def choose_sealed_node(directory: Directory, model: str, rng: random.Random) -> NodeDescriptor:
    """A node for `model` that takes sealed requests and serves the file the model id stands for
    (tp_net.protocol.model_identity), weighted by its measured weight and free slots; 404 when none does."""
    listed = directory.nodes.values()
    identity = model_identities(listed, catalogue_pins()).get(model)
    nodes = [node for node in nodes_serving(listed, model, identity) if node.sealing_keys]
    node = choose_node(nodes, model, rng, weights=directory.weights)
    if node is None:
        raise ApiError(
            404, f"No node in the directory serves model {model!r} sealed.", code="model_not_found"
        )
    return node


def _trust_of(bootstrap: Bootstrap | Path | str | None) -> Trust | None:
    if bootstrap is None:
        return None
    if isinstance(bootstrap, Bootstrap):
        return bootstrap.trust()
    return load_bootstrap(Path(bootstrap)).trust()


def _append_capped(body: bytearray, data: bytes) -> None:
    """Add what the gateway sent to `body`, refusing it before it grows past DIRECTORY_BYTES_MAX."""
    if len(body) + len(data) > DIRECTORY_BYTES_MAX:
        raise upstream_failure("the gateway sent an over-large answer")
    body += data


def _raise_for(status: int, body: bytes) -> None:
    if status == 200:
        return
    try:
        error = json.loads(body)["error"]
        raise ApiError(status, str(error.get("message")), code=error.get("code"), param=error.get("param"))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ApiError(status, f"The gateway answered HTTP {status}.") from None
