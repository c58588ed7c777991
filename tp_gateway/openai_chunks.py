"""A GPU node's response chunks, checked and read into typed pieces (docs/PROTOCOL.md section 6).

A node is untrusted: every chunk is checked before anything from it reaches a client, a malformed one
becomes a 502, and an error document becomes the ApiError `node_error_to_api` makes of it. Unknown extra
keys in a chunk are ignored so that a newer node can add some.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tp_gateway.openai_errors import malformed_chunk, node_error_document_to_api
from tp_net.protocol.inference_contract import CHOICES_MAX, TOP_LOGPROBS_MAX

FLOAT32_MAX = 3.4028234663852886e38  # embeddings travel as float32 when base64-encoded
EMBEDDING_DIMENSIONS_MAX = 65_536
EMBEDDING_INDEX_MAX = 4_095
TOOL_CALL_INDEX_MAX = 127
TOOL_CALL_ID_CHARS_MAX = 256
TOKEN_COUNT_MAX = 2**53  # exact in every JSON reader
LOGPROB_TOKENS_PER_CHUNK_MAX = 4096  # a text piece carries the log probabilities of its own tokens
LOGPROB_TOKEN_CHARS_MAX = 256
FINISH_REASONS = {
    "chat": ("stop", "length", "tool_calls", "content_filter"),
    "completion": ("stop", "length", "content_filter"),
    "embedding": ("stop", "length"),
}


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...]  # the most likely tokens at that place, most likely first


@dataclass(frozen=True)
class Text:
    text: str
    choice: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()


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
    choice: int = 0


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
    """The end of one choice; the response's last chunk (and only it) carries the usage of them all."""

    reason: str
    usage: Usage | None
    choice: int = 0


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


def _tool_calls(value: object, choice: int) -> ToolCalls:
    if not isinstance(value, list) or not value:
        raise malformed_chunk("tool_calls is not a non-empty list")
    return ToolCalls(tuple(_tool_call_delta(call) for call in value), choice)


def _logprob(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value > 0:
        raise malformed_chunk("a log probability is not a finite number <= 0")
    return float(value)


def _token(value: object) -> str:
    if not isinstance(value, str) or len(value) > LOGPROB_TOKEN_CHARS_MAX:
        raise malformed_chunk("a log probability's token is not a short string")
    return value


def _token_logprob(entry: object) -> TokenLogprob:
    if not isinstance(entry, dict) or not isinstance(entry.get("top_logprobs"), list):
        raise malformed_chunk("a log probability entry is not a map with top_logprobs")
    top = entry["top_logprobs"]
    if len(top) > TOP_LOGPROBS_MAX or not all(isinstance(item, dict) for item in top):
        raise malformed_chunk("too many or malformed top_logprobs")
    alternatives = tuple((_token(item.get("token")), _logprob(item.get("logprob"))) for item in top)
    return TokenLogprob(_token(entry.get("token")), _logprob(entry.get("logprob")), alternatives)


def _logprobs(value: object) -> tuple[TokenLogprob, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > LOGPROB_TOKENS_PER_CHUNK_MAX:
        raise malformed_chunk("logprobs is not a list of entries")
    return tuple(_token_logprob(entry) for entry in value)


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


def _finish(document: dict[str, Any], choice: int) -> Finish:
    reason = _string(document["finish_reason"], "finish_reason")
    usage = document.get("usage")
    if usage is None and "usage" not in document:
        return Finish(reason, None, choice)
    if not isinstance(usage, dict):
        raise malformed_chunk("the final chunk's usage is not a map")
    counts = Usage(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")))
    return Finish(reason, counts, choice)


def _choice(document: dict[str, Any]) -> int:
    """Which choice a piece belongs to (`n` > 1); 0 when unmarked."""
    return 0 if "choice" not in document else _index(document["choice"], CHOICES_MAX - 1, "choice")


def read_chunk(document: object) -> Piece:
    """The piece a chunk document holds; ApiError for an error document or a malformed chunk."""
    if not isinstance(document, dict):
        raise malformed_chunk("a chunk is not a map")
    if "error" in document:
        raise node_error_document_to_api(document["error"])
    if "finish_reason" in document:
        return _finish(document, _choice(document))
    if "tool_calls" in document:
        return _tool_calls(document["tool_calls"], _choice(document))
    if "embedding" in document:
        return _embedding(document)
    if "text" in document:
        return Text(_string(document["text"], "text"), _choice(document), _logprobs(document.get("logprobs")))
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
    """Reads one response of a call kind: pieces of its `choices`, each choice ending with a finish chunk,
    the last of them carrying the usage; then nothing. Log probabilities are kept only when asked for (at
    most `top_logprobs` alternatives each)."""

    def __init__(self, kind: str, choices: int = 1, top_logprobs: int | None = None) -> None:
        self._kind = kind
        self._choices = choices
        self._top_logprobs = top_logprobs
        self._assemblers = [ToolCallAssembler() for _ in range(choices)]
        self.ended: dict[int, Finish] = {}  # choice -> its finish
        self.finish: Finish | None = None  # the last chunk (with the usage)

    def tool_calls(self, choice: int = 0) -> ToolCallAssembler:
        return self._assemblers[choice]

    def read(self, document: object) -> Piece:
        if self.finish is not None:
            raise malformed_chunk("a chunk after the final one")
        piece = read_chunk(document)
        if not isinstance(piece, Embedding):
            self._check_choice(piece)
        if isinstance(piece, Finish) and piece.reason not in FINISH_REASONS[self._kind]:
            raise malformed_chunk(f"an unknown finish_reason for a {self._kind} response")
        if not self._allowed(piece):
            raise malformed_chunk(f"a {type(piece).__name__.lower()} chunk in a {self._kind} response")
        if isinstance(piece, Text):
            piece = self._checked_logprobs(piece)
        if isinstance(piece, ToolCalls):
            for delta in piece.deltas:
                self._assemblers[piece.choice].add(delta)
        if isinstance(piece, Finish):
            self._end(piece)
        return piece

    def _check_choice(self, piece: Text | ToolCalls | Finish) -> None:
        if piece.choice >= self._choices or piece.choice in self.ended:
            raise malformed_chunk("a chunk of a choice that was not asked for or has ended")

    def _checked_logprobs(self, piece: Text) -> Text:
        if self._top_logprobs is None:
            return Text(piece.text, piece.choice)  # not asked for: dropped
        if any(len(entry.top) > self._top_logprobs for entry in piece.logprobs):
            raise malformed_chunk("more top_logprobs than asked for")
        return piece

    def _end(self, piece: Finish) -> None:
        self.ended[piece.choice] = piece
        if (piece.usage is not None) != (len(self.ended) == self._choices):
            raise malformed_chunk("usage on a chunk that is not the last choice's end, or missing on it")
        if piece.usage is not None:
            self.finish = piece

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

    def usage(self) -> Usage:
        usage = self.final().usage
        assert usage is not None  # _end lets only the chunk with usage be the final one
        return usage
