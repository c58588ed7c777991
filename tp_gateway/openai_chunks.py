"""A GPU node's response chunks, checked and read into typed pieces (docs/PROTOCOL.md section 6).

A node is untrusted: every chunk is checked before anything from it reaches a client, a malformed one
becomes a 502, and an error document becomes the ApiError `node_error_to_api` makes of it. Unknown extra
keys in a chunk are ignored so that a newer node can add some.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tp_gateway.openai_errors import malformed_chunk, node_error_document_to_api

FLOAT32_MAX = 3.4028234663852886e38  # embeddings travel as float32 when base64-encoded
EMBEDDING_DIMENSIONS_MAX = 65_536
EMBEDDING_INDEX_MAX = 4_095
TOOL_CALL_INDEX_MAX = 127
TOOL_CALL_ID_CHARS_MAX = 256
TOKEN_COUNT_MAX = 2**53  # exact in every JSON reader
FINISH_REASONS = {
    "chat": ("stop", "length", "tool_calls", "content_filter"),
    "completion": ("stop", "length", "content_filter"),
    "embedding": ("stop", "length"),
}


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    index: int
    call_id: str | None  # set on a call's first delta only, with its function name
    name: str | None
    arguments: str

    def to_json(self) -> dict[str, Any]:
        if self.call_id is None:
            return {"index": self.index, "function": {"arguments": self.arguments}}
        function = {"name": self.name, "arguments": self.arguments}
        return {"index": self.index, "id": self.call_id, "type": "function", "function": function}


@dataclass(frozen=True)
class ToolCalls:
    deltas: tuple[ToolCallDelta, ...]


@dataclass(frozen=True)
class Embedding:
    index: int
    vector: tuple[float, ...]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    def to_json(self) -> dict[str, int]:
        total = self.prompt_tokens + self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": total,
        }


@dataclass(frozen=True)
class Finish:
    reason: str
    usage: Usage


Piece = Text | ToolCalls | Embedding | Finish


def _index(value: object, index_max: int, what: str) -> int:
    if type(value) is not int or not 0 <= value <= index_max:
        raise malformed_chunk(f"a bad {what} index")
    return value


def _string(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise malformed_chunk(f"{what} is not a string")
    return value


def _tool_call_delta(call: object) -> ToolCallDelta:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        raise malformed_chunk("a tool call delta is not a map with a function")
    index = _index(call.get("index"), TOOL_CALL_INDEX_MAX, "tool call")
    arguments = _string(call["function"].get("arguments", ""), "tool call arguments")
    if "id" not in call:
        return ToolCallDelta(index, None, None, arguments)
    call_id = _string(call["id"], "a tool call id")
    name = _string(call["function"].get("name"), "a tool call name")
    if (
        call.get("type", "function") != "function"
        or not 0 < len(call_id) <= TOOL_CALL_ID_CHARS_MAX
        or not name
    ):
        raise malformed_chunk("a tool call without a proper id, type or name")
    return ToolCallDelta(index, call_id, name, arguments)


def _tool_calls(value: object) -> ToolCalls:
    if not isinstance(value, list) or not value:
        raise malformed_chunk("tool_calls is not a non-empty list")
    return ToolCalls(tuple(_tool_call_delta(call) for call in value))


def _embedding(document: dict[str, Any]) -> Embedding:
    vector = document["embedding"]
    if not isinstance(vector, list) or not 0 < len(vector) <= EMBEDDING_DIMENSIONS_MAX:
        raise malformed_chunk("an embedding is not a list of numbers")
    for x in vector:
        if isinstance(x, bool) or not isinstance(x, int | float) or not -FLOAT32_MAX <= x <= FLOAT32_MAX:
            raise malformed_chunk("an embedding holds a value that is not a finite float32")
    return Embedding(
        _index(document.get("index"), EMBEDDING_INDEX_MAX, "embedding"), tuple(map(float, vector))
    )


def _count(value: object) -> int:
    if type(value) is not int or not 0 <= value <= TOKEN_COUNT_MAX:
        raise malformed_chunk("a usage count is not a non-negative integer")
    return value


def _finish(document: dict[str, Any]) -> Finish:
    usage = document.get("usage")
    if not isinstance(usage, dict):
        raise malformed_chunk("the final chunk has no usage")
    reason = _string(document["finish_reason"], "finish_reason")
    return Finish(reason, Usage(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))))


def read_chunk(document: object) -> Piece:
    """The piece a chunk document holds; ApiError for an error document or a malformed chunk."""
    if not isinstance(document, dict):
        raise malformed_chunk("a chunk is not a map")
    if "error" in document:
        raise node_error_document_to_api(document["error"])
    if "finish_reason" in document:
        return _finish(document)
    if "tool_calls" in document:
        return _tool_calls(document["tool_calls"])
    if "embedding" in document:
        return _embedding(document)
    if "text" in document:
        return Text(_string(document["text"], "text"))
    raise malformed_chunk("a chunk of an unknown kind")


class ToolCallAssembler:
    """Joins tool-call deltas into whole calls: a call starts with its id and name, then arguments follow."""

    def __init__(self) -> None:
        self._calls: dict[int, tuple[str, str, list[str]]] = {}

    def add(self, delta: ToolCallDelta) -> None:
        started = delta.index in self._calls
        if delta.call_id is not None and delta.name is not None:
            if started:
                raise malformed_chunk("a tool call started twice")
            self._calls[delta.index] = (delta.call_id, delta.name, [delta.arguments])
        elif not started:
            raise malformed_chunk("tool call arguments before the call's start")
        else:
            self._calls[delta.index][2].append(delta.arguments)

    def calls(self) -> list[dict[str, Any]]:
        """The calls in OpenAI's message shape, by index."""
        return [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": "".join(pieces)}}
            for _, (call_id, name, pieces) in sorted(self._calls.items())
        ]


class ResponseReader:
    """Reads one response of a call kind: pieces of that kind, then one final chunk, then nothing."""

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self.tool_calls = ToolCallAssembler()
        self.finish: Finish | None = None

    def read(self, document: object) -> Piece:
        if self.finish is not None:
            raise malformed_chunk("a chunk after the final one")
        piece = read_chunk(document)
        if isinstance(piece, Finish) and piece.reason not in FINISH_REASONS[self._kind]:
            raise malformed_chunk(f"an unknown finish_reason for a {self._kind} response")
        if not self._allowed(piece):
            raise malformed_chunk(f"a {type(piece).__name__.lower()} chunk in a {self._kind} response")
        if isinstance(piece, ToolCalls):
            for delta in piece.deltas:
                self.tool_calls.add(delta)
        if isinstance(piece, Finish):
            self.finish = piece
        return piece

    def _allowed(self, piece: Piece) -> bool:
        if isinstance(piece, Finish):
            return True
        if isinstance(piece, Embedding):
            return self._kind == "embedding"
        return self._kind == "chat" or (self._kind == "completion" and isinstance(piece, Text))

    def final(self) -> Finish:
        """The final chunk; a 502 when the node's response ended without one."""
        if self.finish is None:
            raise malformed_chunk("the response ended without a final chunk")
        return self.finish
