"""Node response chunks -> OpenAI chat.completion(.chunk) and text_completion objects.

Each class takes the node's chunk documents one by one through `feed`, which raises ApiError for an error
document or a malformed chunk. The stream classes return the objects to send as SSE events at once; the
collectors keep them for `result()`. With include_usage the stream ends as OpenAI's does: every chunk has
`"usage": null`, and one extra chunk with no choices carries the usage. With `n` > 1 every choice is its own
generation: its pieces carry their `index`, and each choice ends with its own finish_reason. Log
probabilities, when asked for, come in OpenAI's shapes: chat `{"content": [...], "refusal": null}`,
completions `{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from tp_gateway.openai_chunks import Finish, ResponseReader, Text, TokenLogprob, ToolCalls
from tp_gateway.openai_errors import upstream_failure

# A collector holds a whole answer in memory; a node that never stops must not exhaust ours.
COLLECTED_CHARS_MAX = 16 * 1024 * 1024


def _head(object_name: str, model: str, completion_id: str, created: int) -> dict[str, Any]:
    """The fields every object of one response shares."""
    return {"id": completion_id, "object": object_name, "created": created, "model": model}


def _token_json(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def chat_logprobs(entries: tuple[TokenLogprob, ...]) -> dict[str, Any]:
    """Chat's `choices[i].logprobs`."""
    content = [
        {**_token_json(e.token, e.logprob), "top_logprobs": [_token_json(t, lp) for t, lp in e.top]}
        for e in entries
    ]
    return {"content": content, "refusal": None}


def completion_logprobs(entries: tuple[TokenLogprob, ...], text_offset: int) -> dict[str, Any]:
    """Completions' `choices[i].logprobs`; offsets count from `text_offset` (this choice's text so far)."""
    offsets = []
    for entry in entries:
        offsets.append(text_offset)
        text_offset += len(entry.token)
    return {
        "tokens": [entry.token for entry in entries],
        "token_logprobs": [entry.logprob for entry in entries],
        "top_logprobs": [dict(entry.top) for entry in entries],
        "text_offset": offsets,
    }


class _Stream:
    """What both stream kinds share: the constructor, the reader, the common chunk fields and the usage
    chunk. A kind names its reader's kind and its objects."""

    _kind: ClassVar[str]
    _object_name: ClassVar[str]

    def __init__(
        self,
        model: str,
        completion_id: str,
        created: int,
        include_usage: bool = False,
        *,
        choices: int = 1,
        top_logprobs: int | None = None,
    ) -> None:
        self._reader = ResponseReader(self._kind, choices, top_logprobs)
        self._logprobs = top_logprobs is not None
        self._base = _head(self._object_name, model, completion_id, created)
        self._include_usage = include_usage
        self._begun: set[int] = set()  # choices with a chunk sent
        self._sent_chars = [0] * choices  # text sent so far, per choice (completions' logprob offsets)
        self.started = False  # True once a chunk was returned: from then on errors go into the stream

    @property
    def finished(self) -> bool:
        return self._reader.finish is not None

    def _envelope(self, choice: dict[str, Any]) -> dict[str, Any]:
        self.started = True
        return {**self._base, "choices": [choice], **({"usage": None} if self._include_usage else {})}

    def _last(self, last: dict[str, Any], finish: Finish) -> list[dict[str, Any]]:
        if finish.usage is None or not self._include_usage:
            return [last]
        return [last, {**self._base, "choices": [], "usage": finish.usage.to_json()}]


class ChatCompletionStream(_Stream):
    _kind = "chat"
    _object_name = "chat.completion.chunk"

    def feed(self, document: object) -> list[dict[str, Any]]:
        """The chat.completion.chunk objects for one node chunk (one, or two at the end with usage)."""
        piece = self._reader.read(document)
        if isinstance(piece, Text):
            logprobs = chat_logprobs(piece.logprobs) if self._logprobs else None
            return [self._chunk(piece.choice, {"content": piece.text}, logprobs=logprobs)]
        if isinstance(piece, ToolCalls):
            return [self._chunk(piece.choice, {"tool_calls": [delta.to_json() for delta in piece.deltas]})]
        assert isinstance(piece, Finish)  # the reader lets only these kinds through for chat
        delta = {} if piece.choice in self._begun else {"content": ""}
        return self._last(self._chunk(piece.choice, delta, piece.reason), piece)

    def _chunk(
        self,
        index: int,
        delta: dict[str, Any],
        finish_reason: str | None = None,
        logprobs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if index not in self._begun:
            self._begun.add(index)
            delta = {"role": "assistant", **delta}
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        return self._envelope(choice)


class CompletionStream(_Stream):
    _kind = "completion"
    _object_name = "text_completion"

    def feed(self, document: object) -> list[dict[str, Any]]:
        """The text_completion objects for one node chunk (one, or two at the end with usage)."""
        piece = self._reader.read(document)
        if isinstance(piece, Text):
            logprobs = None
            if self._logprobs:
                logprobs = completion_logprobs(piece.logprobs, self._sent_chars[piece.choice])
                self._sent_chars[piece.choice] += sum(len(entry.token) for entry in piece.logprobs)
            return [self._chunk(piece.choice, piece.text, logprobs=logprobs)]
        assert isinstance(piece, Finish)
        return self._last(self._chunk(piece.choice, "", piece.reason), piece)

    def _chunk(
        self, index: int, text: str, finish_reason: str | None = None, logprobs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        choice = {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish_reason}
        return self._envelope(choice)


class _Collector:
    """What both collectors share: the constructor, the reader, the text and log probabilities kept so far,
    and their bound. A kind names its reader's kind and its object."""

    _kind: ClassVar[str]
    _object_name: ClassVar[str]

    def __init__(
        self,
        model: str,
        completion_id: str,
        created: int,
        *,
        choices: int = 1,
        top_logprobs: int | None = None,
    ) -> None:
        self._reader = ResponseReader(self._kind, choices, top_logprobs)
        self._logprobs = top_logprobs is not None
        self._base = _head(self._object_name, model, completion_id, created)
        self._texts: list[list[str]] = [[] for _ in range(choices)]
        self._entries: list[list[TokenLogprob]] = [[] for _ in range(choices)]
        self._chars = 0

    @property
    def finished(self) -> bool:
        return self._reader.finish is not None

    def feed(self, document: object) -> None:
        piece = self._reader.read(document)
        if isinstance(piece, Text):
            self._count(len(piece.text) + sum(len(e.token) + 16 * (1 + len(e.top)) for e in piece.logprobs))
            self._texts[piece.choice].append(piece.text)
            self._entries[piece.choice].extend(piece.logprobs)
        elif isinstance(piece, ToolCalls):  # the reader's assembler keeps these
            self._count(sum(len(delta.arguments) for delta in piece.deltas))

    def _count(self, chars: int) -> None:
        self._chars += chars
        if self._chars > COLLECTED_CHARS_MAX:
            raise upstream_failure("the node's answer is larger than the gateway collects.")

    def _object(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        """The object; a 502 when the node's response ended early."""
        usage = self._reader.usage().to_json()
        return {**self._base, "choices": choices, "usage": usage}

    def _ends(self) -> list[Finish]:
        self._reader.final()  # a 502 when the response ended early
        return [self._reader.ended[index] for index in range(len(self._texts))]


class ChatCompletionCollector(_Collector):
    _kind = "chat"
    _object_name = "chat.completion"

    def result(self) -> dict[str, Any]:
        """The chat.completion object; a 502 when the node's response ended early."""
        choices = []
        for index, finish in enumerate(self._ends()):
            calls = self._reader.tool_calls(index).calls()
            text = "".join(self._texts[index])
            message: dict[str, Any] = {
                "role": "assistant",
                "content": text or (None if calls else ""),
                "refusal": None,
            }
            if calls:
                message["tool_calls"] = calls
            logprobs = chat_logprobs(tuple(self._entries[index])) if self._logprobs else None
            choices.append(
                {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish.reason}
            )
        return self._object(choices)


class CompletionCollector(_Collector):
    _kind = "completion"
    _object_name = "text_completion"

    def result(self) -> dict[str, Any]:
        """The text_completion object; a 502 when the node's response ended early."""
        choices = []
        for index, finish in enumerate(self._ends()):
            logprobs = completion_logprobs(tuple(self._entries[index]), 0) if self._logprobs else None
            text = "".join(self._texts[index])
            choices.append(
                {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish.reason}
            )
        return self._object(choices)
