"""The inference engine interface, and a deterministic fake engine for tests and the simulator.

An engine turns one request document (docs/PROTOCOL.md section 6, checked by tp_node.inference) into an
async iterator of chunk documents: `{"text": str}` or `{"tool_calls": [...]}` pieces, or `{"embedding":
[...], "index": i}` vectors, then exactly one `{"finish_reason": str, "usage": {...}}`. Closing the
iterator (or cancelling the task that iterates) stops generation.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from tp_net.protocol.inference_contract import EngineError
from tp_node.inference import (
    InferenceRequest,
    embedding_chunk,
    final_chunk,
    for_choice,
    logprob_entry,
    parse_request,
    tool_call_start,
)

__all__ = ["Engine", "EngineError", "FakeEngine", "ModelInfo", "ModelSource", "ServingEngine", "fake_token"]

FAKE_VOCABULARY = (
    "the", "a", "private", "token", "place", "relay", "node", "circuit", "onion", "layer",
    "model", "answer", "stream", "cell", "hop", "key",
)  # fmt: skip
FAKE_MAX_TOKENS_DEFAULT = 16
FAKE_MODEL_ID = "fake"
FAKE_EMBEDDING_DIMENSIONS = 8
FAKE_CONTEXT_TOKENS = 4096


@dataclass(frozen=True)
class ModelInfo:
    """One model a node serves, as its descriptor advertises it (a snapshot: load changes)."""

    model_id: str
    sha256: str  # hex digest of the GGUF file
    parameter_count: int
    quantisation: str  # the GGUF file type, e.g. "Q4_K_M", "F16"
    context_length: int  # tokens per request (the n_ctx each slot was loaded with)
    max_concurrent: int  # slots: requests generated at the same time
    queue_limit: int  # requests that may wait for a slot before "overloaded"
    active_requests: int
    queued_requests: int
    embedding: bool  # serves embedding requests (and only those)
    vision: bool = False  # reads images in chat messages (a llama model loaded with its projector, --mmproj)


class Engine(Protocol):
    def generate(self, request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """Chunks for `request`; raises EngineError for a request it cannot serve."""


class ModelSource(Protocol):
    def models(self) -> tuple[ModelInfo, ...]:
        """The models served, with their current load."""


class ServingEngine(Engine, ModelSource, Protocol):
    """An engine that also describes its models (what a node runs)."""


def fake_token(seed: bytes, index: int) -> str:
    digest = hashlib.blake2b(seed + index.to_bytes(8, "big"), digest_size=2).digest()
    return FAKE_VOCABULARY[int.from_bytes(digest, "big") % len(FAKE_VOCABULARY)] + " "


def fake_embedding(text: str) -> list[float]:
    digest = hashlib.blake2b(text.encode(), digest_size=4 * FAKE_EMBEDDING_DIMENSIONS).digest()
    return [(n / 2**31) - 1.0 for n in struct.unpack(f">{FAKE_EMBEDDING_DIMENSIONS}I", digest)]


class _StopScanner:
    """Holds back text that may be the start of a stop sequence; finds the first stop."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = stops
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Text safe to emit now."""
        self._pending += text
        cuts = [self._pending.find(stop) for stop in self._stops if stop in self._pending]
        if cuts:
            self.stopped = True
            emit, self._pending = self._pending[: min(cuts)], ""
            return emit
        hold = max(
            (n for stop in self._stops for n in range(len(stop), 0, -1) if self._pending.endswith(stop[:n])),
            default=0,
        )
        emit, self._pending = (
            self._pending[: len(self._pending) - hold],
            self._pending[len(self._pending) - hold :],
        )
        return emit

    def flush(self) -> str:
        emit, self._pending = self._pending, ""
        return emit


class FakeEngine:
    """Deterministic output: token i is a vocabulary word picked by a hash of (prompt, i).

    Serves one model, `model_id`; a request without a model gets it too. `token_delay_s` paces tokens (on
    trio's clock, so virtual time in the simulator): token i is due i + 1 delays after the request started,
    so a sub-millisecond delay keeps its rate although the event loop's timer wakes in whole milliseconds.
    """

    def __init__(
        self, *, token_delay_s: float = 0.0, model_id: str = FAKE_MODEL_ID, vision: bool = False
    ) -> None:
        self.token_delay_s = token_delay_s
        self.model_id = model_id
        self.vision = vision
        self._active = 0

    def models(self) -> tuple[ModelInfo, ...]:
        return (
            ModelInfo(
                model_id=self.model_id,
                sha256=hashlib.sha256(self.model_id.encode()).hexdigest(),
                parameter_count=len(FAKE_VOCABULARY),
                quantisation="F32",
                context_length=FAKE_CONTEXT_TOKENS,
                max_concurrent=1_000_000,
                queue_limit=0,
                active_requests=self._active,
                queued_requests=0,
                embedding=False,
                vision=self.vision,
            ),
        )

    async def generate(self, request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        parsed = parse_request(request)
        if parsed.model not in (None, self.model_id):
            raise EngineError("model_not_found", f"this node does not serve model {parsed.model!r}")
        if parsed.images and not self.vision:
            raise EngineError("vision_unsupported", f"model {self.model_id!r} on this node reads no images")
        self._active += 1
        try:
            if parsed.kind == "embedding":
                for index, text in enumerate(parsed.inputs):
                    await trio.lowlevel.checkpoint()
                    yield embedding_chunk(index, fake_embedding(text))
                yield final_chunk("stop", sum(len(text.split()) for text in parsed.inputs), 0)
            else:
                async for chunk in self._generate_text(parsed):
                    yield chunk
        finally:
            self._active -= 1

    async def _generate_text(self, request: InferenceRequest) -> AsyncGenerator[dict[str, Any], None]:
        prompt = "\n".join(request.texts())
        prompt_tokens, completion_tokens = len(prompt.split()), 0
        unknown = [token for token in request.logit_bias if token >= len(FAKE_VOCABULARY)]
        if unknown:
            raise EngineError(
                "invalid_logit_bias", f"logit_bias names token {unknown[0]}, not in the vocabulary"
            )
        for choice in range(request.n):
            finish = "length"
            async for chunk in self._choice(request, prompt, choice):
                if "finish_reason" in chunk:
                    finish, completion_tokens = chunk["finish_reason"], completion_tokens + chunk["tokens"]
                else:
                    yield for_choice(chunk, choice, request.n)
            if choice < request.n - 1:
                yield for_choice({"finish_reason": finish}, choice, request.n)
            else:
                yield for_choice(final_chunk(finish, prompt_tokens, completion_tokens), choice, request.n)

    async def _choice(
        self, request: InferenceRequest, prompt: str, choice: int
    ) -> AsyncGenerator[dict[str, Any], None]:
        """One choice's pieces, then {"finish_reason", "tokens"} (its completion tokens)."""
        tool = request.named_tool()
        if request.tool_choice == "required":  # the fake always calls the first tool
            tool = str(request.tools[0]["function"]["name"])
        if tool is not None:
            await trio.lowlevel.checkpoint()
            yield tool_call_start(0, f"call_fake_{choice}", tool, "{}")
            yield {"finish_reason": "tool_calls", "tokens": 1}
            return
        # Choice 0 is what a request with n = 1 gets; every other choice is a generation of its own.
        seed = hashlib.blake2b(
            prompt.encode() + (b"\0%d" % choice if choice else b""), digest_size=8
        ).digest()
        if request.images:  # what a vision model "saw", deterministically: how many images, how large
            await trio.lowlevel.checkpoint()
            yield {"text": fake_image_summary(request.images)}
        max_tokens = request.max_tokens or FAKE_MAX_TOKENS_DEFAULT
        scanner = _StopScanner(request.stop)
        produced = 0
        started = trio.current_time()
        while produced < max_tokens and not scanner.stopped:
            due = started + (produced + 1) * self.token_delay_s
            await (trio.sleep_until(due) if self.token_delay_s else trio.lowlevel.checkpoint())
            token = fake_biased_token(seed, produced, request.logit_bias)
            text = scanner.feed(token)
            produced += 1
            if text and request.logprobs is not None:
                yield {"text": text, "logprobs": [fake_logprob(token, seed, produced, request.logprobs)]}
            elif text:
                yield {"text": text}
        if not scanner.stopped and (rest := scanner.flush()):
            yield {"text": rest}
        yield {"finish_reason": "stop" if scanner.stopped else "length", "tokens": produced}


def fake_image_summary(images: tuple[bytes, ...]) -> str:
    return f"[{len(images)} images: {', '.join(str(len(image)) for image in images)} bytes] "


def fake_biased_token(seed: bytes, index: int, logit_bias: Mapping[int, float]) -> str:
    """fake_token, unless `logit_bias` (token id: vocabulary index) favours another: the most favoured word
    wins, ties going to the first in the order that starts at fake_token's pick."""
    if not logit_bias:
        return fake_token(seed, index)
    first = FAKE_VOCABULARY.index(fake_token(seed, index)[:-1])
    order = [(first + k) % len(FAKE_VOCABULARY) for k in range(len(FAKE_VOCABULARY))]
    return FAKE_VOCABULARY[max(order, key=lambda word: logit_bias.get(word, 0.0))] + " "


def fake_logprob(token: str, seed: bytes, index: int, top: int) -> dict[str, Any]:
    """A deterministic log probability for a fake token, with `top` alternatives (itself first)."""
    logprob = -(hashlib.blake2b(seed + index.to_bytes(8, "big"), digest_size=1).digest()[0] + 1) / 256
    others = [word + " " for word in FAKE_VOCABULARY if word + " " != token]
    alternatives = [(token, logprob)] + [(word, logprob - 1.0 - k) for k, word in enumerate(others)]
    return logprob_entry(token, logprob, alternatives[:top])
