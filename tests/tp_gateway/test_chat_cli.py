"""tp-chat's conversation: each turn carries the ones before it; a stopped answer keeps what was shown; a
failed turn leaves nothing behind, and its error never carries the prompt."""

from __future__ import annotations

import argparse
import io
import os
from collections.abc import AsyncGenerator, Mapping
from typing import Any, cast

import pytest
import trio

from tp_gateway.chat_cli import ChatError, Conversation, LineReader, _pick_model
from tp_gateway.overlay import Overlay, OverlayError


class FakeOverlay:
    """Answers each request with `words`, one chunk each, a checkpoint apart; records the documents."""

    def __init__(self, words: list[str], error: OverlayError | None = None) -> None:
        self.words = words
        self.error = error
        self.documents: list[Mapping[str, Any]] = []

    async def generate(self, model_id: str, document: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any]]:
        self.documents.append(document)
        if self.error is not None:
            raise self.error
        for word in self.words:
            await trio.sleep(0.01)
            yield {"text": word}
        yield {"finish_reason": "stop", "usage": {}}


def conversation(overlay: FakeOverlay, system: str | None = None) -> Conversation:
    args = argparse.Namespace(max_tokens=7, system=system)
    return Conversation(cast(Overlay, overlay), "m", args)


async def test_each_turn_carries_the_conversation_so_far() -> None:
    overlay = FakeOverlay(["Hi", " there"])
    chat, out = conversation(overlay, system="be brief"), io.StringIO()
    assert await chat.answer("first", out) == "Hi there"
    await chat.answer("second", out)
    assert out.getvalue() == "Hi there\nHi there\n"
    assert overlay.documents[1] == {
        "kind": "chat",
        "model": "m",
        "max_tokens": 7,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "Hi there"},
            {"role": "user", "content": "second"},
        ],
    }
    chat.new()
    await chat.answer("third", out)
    assert overlay.documents[2]["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "third"},
    ]


class StopsAt(io.StringIO):
    """A terminal that presses Ctrl-C (cancels `scope`) once it shows `word`."""

    def __init__(self, word: str, scope: trio.CancelScope) -> None:
        super().__init__()
        self.word, self.scope = word, scope

    def write(self, text: str) -> int:
        written = super().write(text)
        if self.word in self.getvalue():
            self.scope.cancel()
        return written


async def test_a_stopped_answer_keeps_what_was_shown() -> None:
    chat = conversation(FakeOverlay(["a", "b", "c", "d"]))
    with trio.CancelScope() as scope:
        out = StopsAt("b", scope)
        await chat.answer("go", out)
    assert scope.cancelled_caught and out.getvalue() == "ab\n"
    assert chat.messages == [{"role": "user", "content": "go"}, {"role": "assistant", "content": "ab"}]


async def test_a_failed_turn_leaves_no_trace_and_its_error_no_prompt() -> None:
    error = OverlayError("model_not_found", "no node serves model 'm'")
    chat = conversation(FakeOverlay([], error))
    with pytest.raises(ChatError, match="no node serves model 'm'") as caught:
        await chat.answer("my secret question", io.StringIO())
    assert "secret" not in str(caught.value)
    assert chat.messages == []


class ListingOverlay:
    """The part of Overlay the model picker reads: a directory that is ready and the models it lists."""

    def __init__(self, models: list[str]) -> None:
        self.ready = trio.Event()
        self.ready.set()
        self.models = models
        self.bootstrap = argparse.Namespace(network="test-net")

    def model_ids(self) -> list[str]:
        return self.models


async def pick(models: list[str], typed: bytes, **args: object) -> str:
    read_end, write_end = os.pipe()
    os.write(write_end, typed)
    os.close(write_end)
    lines = LineReader(read_end)
    namespace = argparse.Namespace(model=None, once=None, **args)
    try:
        return await _pick_model(cast(Overlay, ListingOverlay(models)), namespace, lines)
    finally:
        os.close(read_end)


async def test_the_picker_offers_the_networks_models_by_number_or_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await pick(["a", "b", "c"], b"9\nnope\n2\n") == "b"
    out = capsys.readouterr().out
    assert "  1. a\n  2. b\n  3. c\n" in out and out.count("model [1-3]: ") == 3
    assert await pick(["a", "b"], b"a\n") == "a"
    assert await pick(["only"], b"") == "only"  # nothing to pick
    with pytest.raises(ChatError, match="no model chosen"):
        await pick(["a", "b"], b"")  # Ctrl-D at the picker


async def test_a_named_model_the_network_lacks_is_a_clear_error() -> None:
    overlay = cast(Overlay, ListingOverlay(["a", "b"]))
    for once in (None, "hi"):
        args = argparse.Namespace(model="zzz", once=once)
        with pytest.raises(
            ChatError, match=r"no node of this network serves model 'zzz' \(models served: a, b\)"
        ):
            await _pick_model(overlay, args, None)
    with pytest.raises(ChatError, match="several models; name one with --model: a, b"):
        await _pick_model(overlay, argparse.Namespace(model=None, once="hi"), None)
