"""Checks that a response is well formed (docs/PROTOCOL.md section 6), for every engine's tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

FINISH_REASONS = {"stop", "length", "tool_calls"}
PIECE_KEYS = {
    "chat": ({"text"}, {"tool_calls"}),
    "completion": ({"text"},),
    "embedding": ({"embedding", "index"},),
}


def assert_well_formed(chunks: Sequence[dict[str, Any]], kind: str = "chat") -> None:
    """Pieces of the kind's shapes, then exactly one final chunk with consistent usage."""
    *pieces, final = chunks
    assert set(final) == {"finish_reason", "usage"}, final
    assert final["finish_reason"] in FINISH_REASONS
    usage = final["usage"]
    assert set(usage) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert all(type(value) is int and value >= 0 for value in usage.values())
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    for piece in pieces:
        assert set(piece) in PIECE_KEYS[kind], piece
        if "text" in piece:
            assert isinstance(piece["text"], str) and piece["text"]
        if "tool_calls" in piece:
            _assert_tool_deltas(piece["tool_calls"])
        if "embedding" in piece:
            assert all(isinstance(x, float) for x in piece["embedding"])


def _assert_tool_deltas(calls: list[dict[str, Any]]) -> None:
    for call in calls:
        assert isinstance(call["index"], int)
        if "id" in call:  # the first delta of a call: OpenAI's shape
            assert call["type"] == "function" and isinstance(call["function"]["name"], str)
        else:
            assert set(call) == {"index", "function"} and set(call["function"]) == {"arguments"}
        assert isinstance(call["function"]["arguments"], str)


def text_of(chunks: Sequence[dict[str, Any]]) -> str:
    return "".join(chunk.get("text", "") for chunk in chunks)


def tool_arguments(chunks: Sequence[dict[str, Any]]) -> dict[int, str]:
    arguments: dict[int, str] = {}
    for chunk in chunks:
        for call in chunk.get("tool_calls", ()):
            arguments[call["index"]] = arguments.get(call["index"], "") + call["function"]["arguments"]
    return arguments
