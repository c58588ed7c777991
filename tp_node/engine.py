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

from tp_node.inference import (
    EngineError,
    InferenceRequest,
    embedding_chunk,
    final_chunk,
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

    def __init__(self, *, token_delay_s: float = 0.0, model_id: str = FAKE_MODEL_ID) -> None:
        self.token_delay_s = token_delay_s
        self.model_id = model_id
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
            ),
        )

    async def generate(self, request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        parsed = parse_request(request)
        if parsed.model not in (None, self.model_id):
            raise EngineError("model_not_found", f"this node does not serve model {parsed.model!r}")
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
        prompt_tokens = len(prompt.split())
        tool = request.named_tool()
        if tool is not None:
            await trio.lowlevel.checkpoint()
            yield tool_call_start(0, "call_fake_0", tool, "{}")
            yield final_chunk("tool_calls", prompt_tokens, 1)
            return
        seed = hashlib.blake2b(prompt.encode(), digest_size=8).digest()
        max_tokens = request.max_tokens or FAKE_MAX_TOKENS_DEFAULT
        scanner = _StopScanner(request.stop)
        produced = 0
        started = trio.current_time()
        while produced < max_tokens and not scanner.stopped:
            due = started + (produced + 1) * self.token_delay_s
            await (trio.sleep_until(due) if self.token_delay_s else trio.lowlevel.checkpoint())
            text = scanner.feed(fake_token(seed, produced))
            produced += 1
            if text:
                yield {"text": text}
        if not scanner.stopped and (rest := scanner.flush()):
            yield {"text": rest}
        yield final_chunk("stop" if scanner.stopped else "length", prompt_tokens, produced)
