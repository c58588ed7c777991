"""tp-chat's conversation: each turn carries the ones before it; a stopped answer keeps what was shown; a
failed turn leaves nothing behind, and its error never carries the prompt."""

from __future__ import annotations

import argparse
import io
from collections.abc import AsyncGenerator, Mapping
from typing import Any, cast

import pytest
import trio

from tp_gateway.chat_cli import ChatError, Conversation
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


async def test_a_stopped_answer_keeps_what_was_shown() -> None:
    chat, out = conversation(FakeOverlay(["a", "b", "c", "d"])), io.StringIO()
    with trio.move_on_after(0.025):
        await chat.answer("go", out)
    shown = out.getvalue().strip()
    assert shown and len(shown) < 4
    assert chat.messages == [{"role": "user", "content": "go"}, {"role": "assistant", "content": shown}]


async def test_a_failed_turn_leaves_no_trace_and_its_error_no_prompt() -> None:
    error = OverlayError("model_not_found", "no node serves model 'm'")
    chat = conversation(FakeOverlay([], error))
    with pytest.raises(ChatError, match="no node serves model 'm'") as caught:
        await chat.answer("my secret question", io.StringIO())
    assert "secret" not in str(caught.value)
    assert chat.messages == []
