"""The optional moderation hook refuses before inference, and is off unless configured."""

from __future__ import annotations

import argparse
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.tp_node.chunk_shapes import assert_well_formed
from tp_net.protocol.inference_contract import EngineError
from tp_node.engine import FakeEngine, ModelInfo
from tp_node.engine_cli import add_engine_arguments, open_engine
from tp_node.gguf_header import ModelError
from tp_node.moderation import Blocklist, ModeratedEngine, ModerationConfigError, PluginModerator


class RecordingEngine(FakeEngine):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Mapping[str, Any]] = []

    async def generate(self, request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        self.seen.append(request)
        async for chunk in super().generate(request):
            yield chunk


def chat(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "max_tokens": 3}


async def ask(engine: ModeratedEngine, request: dict[str, Any]) -> list[dict[str, Any]]:
    return [chunk async for chunk in engine.generate(request)]


async def refused_code(engine: ModeratedEngine, request: dict[str, Any]) -> str:
    with pytest.raises(EngineError) as caught:
        await ask(engine, request)
    return caught.value.code


async def test_a_blocklisted_term_is_refused_before_the_engine_sees_it() -> None:
    inner = RecordingEngine()
    engine = ModeratedEngine(inner, Blocklist(["Forbidden Topic"]))
    assert await refused_code(engine, chat("tell me about the FORBIDDEN topic")) == "content_policy_violation"
    # NFKC folds full-width letters to plain ones before comparing.
    assert (
        await refused_code(engine, chat("\uff46\uff4f\uff52\uff42\uff49\uff44\uff44\uff45\uff4e topic"))
        == "content_policy_violation"
    )
    completion = {"kind": "completion", "prompt": "a forbidden topic!"}
    assert await refused_code(engine, completion) == "content_policy_violation"
    assert inner.seen == []
    assert_well_formed(await ask(engine, chat("a permitted topic")))
    assert len(inner.seen) == 1


async def test_a_bad_request_is_refused_for_what_is_wrong_with_it_first() -> None:
    engine = ModeratedEngine(FakeEngine(), Blocklist(["x"]))
    assert await refused_code(engine, {"messages": "x"}) == "invalid_messages"


def write_plugin(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "policy.py"
    path.write_text(body)
    return path


async def test_a_plugin_decides_and_fails_closed(tmp_path: Path) -> None:
    allow_short = write_plugin(
        tmp_path, "def allows(request):\n    return len(request['messages'][0]['content']) < 10\n"
    )
    engine = ModeratedEngine(FakeEngine(), PluginModerator.from_file(allow_short))
    assert_well_formed(await ask(engine, chat("short")))
    assert await refused_code(engine, chat("much too long a request")) == "content_policy_violation"
    raising = write_plugin(tmp_path, "def allows(request):\n    raise RuntimeError(request)\n")
    engine = ModeratedEngine(FakeEngine(), PluginModerator.from_file(raising))
    assert await refused_code(engine, chat("anything")) == "moderation_failed"
    not_bool = write_plugin(tmp_path, "def allows(request):\n    return 'yes'\n")
    engine = ModeratedEngine(FakeEngine(), PluginModerator.from_file(not_bool))
    assert await refused_code(engine, chat("anything")) == "moderation_failed"


def test_unusable_moderation_files_are_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ModerationConfigError, match="no terms"):
        Blocklist.from_file(write_plugin(tmp_path, "# only a comment\n\n"))
    with pytest.raises(ModerationConfigError, match="cannot read"):
        Blocklist.from_file(tmp_path / "missing.txt")
    with pytest.raises(ModerationConfigError, match="does not exist"):
        PluginModerator.from_file(tmp_path / "missing.py")
    with pytest.raises(ModerationConfigError, match="defines no allows"):
        PluginModerator.from_file(write_plugin(tmp_path, "x = 1\n"))
    with pytest.raises(ModerationConfigError, match="failed to load"):
        PluginModerator.from_file(write_plugin(tmp_path, "import no_such_module_anywhere\n"))


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    return parser.parse_args(["--engine", "fake", *argv])  # llama is the default engine


async def test_moderation_is_off_by_default_and_on_when_configured(tmp_path: Path) -> None:
    async with open_engine(parse()) as engine:
        assert isinstance(engine, FakeEngine)
        models: tuple[ModelInfo, ...] = engine.models()
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text("# terms\nsecret\n")
    async with open_engine(parse("--moderation-blocklist", str(blocklist))) as engine:
        assert isinstance(engine, ModeratedEngine)
        assert engine.models() == models
        with pytest.raises(EngineError, match="content policy"):
            async for _ in engine.generate(chat("a secret")):
                pass
    with pytest.raises(ModelError, match="not both"):
        async with open_engine(parse("--moderation-blocklist", "a", "--moderation-plugin", "b")):
            pass
