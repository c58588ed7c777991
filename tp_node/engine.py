"""The inference engine interface, and a deterministic fake engine for tests and the simulator.

An engine turns one request document into an async iterator of chunk documents:
`{"text": str}` per piece of output, then one `{"finish_reason": str, "usage": {...}}`. Closing the iterator
(or cancelling the task that iterates) stops generation.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, Mapping
from typing import Any, Protocol

import trio

from tp_node.services import ServiceError

FAKE_VOCABULARY = (
    "the", "a", "private", "token", "place", "relay", "node", "circuit", "onion", "layer",
    "model", "answer", "stream", "cell", "hop", "key",
)  # fmt: skip
FAKE_MAX_TOKENS_DEFAULT = 16
FAKE_MAX_TOKENS_LIMIT = 100_000


class EngineError(ServiceError):
    """A request the engine cannot serve; `code` is machine-readable, the message safe to show."""


class Engine(Protocol):
    def generate(self, request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """Chunks for `request`; raises EngineError for a request it cannot serve."""


def _prompt_of(request: Mapping[str, Any]) -> str:
    messages = request.get("messages")
    if isinstance(messages, list):
        return "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    return str(request.get("prompt", ""))


class FakeEngine:
    """Deterministic output: token i is a vocabulary word picked by a hash of (prompt, i).

    `token_delay_s` paces tokens (on trio's clock, so virtual time in the simulator).
    """

    def __init__(self, *, token_delay_s: float = 0.0) -> None:
        self.token_delay_s = token_delay_s

    async def generate(self, request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        max_tokens = request.get("max_tokens", FAKE_MAX_TOKENS_DEFAULT)
        if type(max_tokens) is not int or not 1 <= max_tokens <= FAKE_MAX_TOKENS_LIMIT:
            raise EngineError(
                "invalid_max_tokens", f"max_tokens must be an integer in 1..{FAKE_MAX_TOKENS_LIMIT}"
            )
        prompt = _prompt_of(request)
        seed = hashlib.blake2b(prompt.encode(), digest_size=8).digest()
        for index in range(max_tokens):
            if self.token_delay_s:
                await trio.sleep(self.token_delay_s)
            else:
                await trio.lowlevel.checkpoint()
            yield {"text": fake_token(seed, index)}
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": max_tokens}
        usage["total_tokens"] = usage["prompt_tokens"] + max_tokens
        yield {"finish_reason": "length", "usage": usage}


def fake_token(seed: bytes, index: int) -> str:
    digest = hashlib.blake2b(seed + index.to_bytes(8, "big"), digest_size=2).digest()
    return FAKE_VOCABULARY[int.from_bytes(digest, "big") % len(FAKE_VOCABULARY)] + " "
