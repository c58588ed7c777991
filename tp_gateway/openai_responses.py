"""Node response chunks -> OpenAI chat.completion(.chunk) and text_completion objects.

Each class takes the node's chunk documents one by one through `feed`, which raises ApiError for an error
document or a malformed chunk. The stream classes return the objects to send as SSE events at once; the
collectors keep them for `result()`. With include_usage the stream ends as OpenAI's does: every chunk has
`"usage": null`, and one extra chunk with no choices carries the usage.
"""

from __future__ import annotations

from typing import Any

from tp_gateway.openai_chunks import Finish, ResponseReader, Text, ToolCalls
from tp_gateway.openai_errors import upstream_failure

# A collector holds a whole answer in memory; a node that never stops must not exhaust ours.
COLLECTED_CHARS_MAX = 16 * 1024 * 1024


def _head(object_name: str, model: str, completion_id: str, created: int) -> dict[str, Any]:
    """The fields every object of one response shares."""
    return {"id": completion_id, "object": object_name, "created": created, "model": model}


class _Stream:
    """What both stream kinds share: the reader, the common chunk fields and the usage chunk."""

    def __init__(self, kind: str, head: dict[str, Any], include_usage: bool) -> None:
        self._reader = ResponseReader(kind)
        self._base = head
        self._include_usage = include_usage
        self.started = False  # True once a chunk was returned: from then on errors go into the stream

    @property
    def finished(self) -> bool:
        return self._reader.finish is not None

    def _envelope(self, choice: dict[str, Any]) -> dict[str, Any]:
        self.started = True
        return {**self._base, "choices": [choice], **({"usage": None} if self._include_usage else {})}

    def _last(self, last: dict[str, Any], finish: Finish) -> list[dict[str, Any]]:
        return (
            [last, {**self._base, "choices": [], "usage": finish.usage.to_json()}]
            if self._include_usage
            else [last]
        )


class ChatCompletionStream(_Stream):
    def __init__(self, model: str, completion_id: str, created: int, include_usage: bool = False) -> None:
        super().__init__("chat", _head("chat.completion.chunk", model, completion_id, created), include_usage)

    def feed(self, document: object) -> list[dict[str, Any]]:
        """The chat.completion.chunk objects for one node chunk (one, or two at the end with usage)."""
        piece = self._reader.read(document)
        if isinstance(piece, Text):
            return [self._chunk({"content": piece.text})]
        if isinstance(piece, ToolCalls):
            return [self._chunk({"tool_calls": [delta.to_json() for delta in piece.deltas]})]
        assert isinstance(piece, Finish)  # the reader lets only these kinds through for chat
        last = self._chunk({} if self.started else {"content": ""}, piece.reason)
        return self._last(last, piece)

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        if not self.started:
            delta = {"role": "assistant", **delta}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._envelope(choice)


class CompletionStream(_Stream):
    def __init__(self, model: str, completion_id: str, created: int, include_usage: bool = False) -> None:
        super().__init__("completion", _head("text_completion", model, completion_id, created), include_usage)

    def feed(self, document: object) -> list[dict[str, Any]]:
        """The text_completion objects for one node chunk (one, or two at the end with usage)."""
        piece = self._reader.read(document)
        if isinstance(piece, Text):
            return [self._chunk(piece.text)]
        assert isinstance(piece, Finish)
        last = self._chunk("", piece.reason)
        return self._last(last, piece)

    def _chunk(self, text: str, finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
        return self._envelope(choice)


class _Collector:
    """What both collectors share: the reader, the text kept so far and its bound."""

    def __init__(self, kind: str, head: dict[str, Any]) -> None:
        self._reader = ResponseReader(kind)
        self._base = head
        self._texts: list[str] = []
        self._chars = 0

    @property
    def finished(self) -> bool:
        return self._reader.finish is not None

    def feed(self, document: object) -> None:
        piece = self._reader.read(document)
        if isinstance(piece, Text):
            self._count(len(piece.text))
            self._texts.append(piece.text)
        elif isinstance(piece, ToolCalls):  # the reader's assembler keeps these
            self._count(sum(len(delta.arguments) for delta in piece.deltas))

    def _count(self, chars: int) -> None:
        self._chars += chars
        if self._chars > COLLECTED_CHARS_MAX:
            raise upstream_failure("the node's answer is larger than the gateway collects.")

    def _object(self, choice: dict[str, Any], finish: Finish) -> dict[str, Any]:
        return {**self._base, "choices": [{"index": 0, **choice}], "usage": finish.usage.to_json()}


class ChatCompletionCollector(_Collector):
    def __init__(self, model: str, completion_id: str, created: int) -> None:
        super().__init__("chat", _head("chat.completion", model, completion_id, created))

    def result(self) -> dict[str, Any]:
        """The chat.completion object; a 502 when the node's response ended early."""
        finish = self._reader.final()
        calls = self._reader.tool_calls.calls()
        text = "".join(self._texts)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text or (None if calls else ""),
            "refusal": None,
        }
        if calls:
            message["tool_calls"] = calls
        return self._object({"message": message, "logprobs": None, "finish_reason": finish.reason}, finish)


class CompletionCollector(_Collector):
    def __init__(self, model: str, completion_id: str, created: int) -> None:
        super().__init__("completion", _head("text_completion", model, completion_id, created))

    def result(self) -> dict[str, Any]:
        """The text_completion object; a 502 when the node's response ended early."""
        finish = self._reader.final()
        choice = {"text": "".join(self._texts), "logprobs": None, "finish_reason": finish.reason}
        return self._object(choice, finish)
