"""The llama engine with a projector (--mmproj), on the tiny model and the tiny random projector
(tp_node.testing.tiny_projector): images are decoded and encoded by llama.cpp's mtmd into image tokens of
the prompt; the model is advertised as vision; a model without a projector refuses images; the handler never
fetches a URL; and mtmd's own log, which quotes the prompt, does not reach stderr."""

from __future__ import annotations

import base64
import os
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.tp_node.chunk_shapes import assert_well_formed
from tp_net.protocol.inference_contract import EngineError
from tp_node.llama_engine import LlamaEngine, ModelConfig, open_llama_engine
from tp_node.llama_jobs import DataUrlChatHandler
from tp_node.testing.tiny_projector import IMAGE_TOKENS, write_tiny_projector

SENTINEL = "ZEBRA-SENTINEL-4711"
IMAGE_ROUNDS = 40  # of 3 requests at once: without the lock, 40 left stderr on /dev/null (4 did not)


def png(width: int, height: int) -> bytes:
    rows = b"".join(
        b"\0" + b"".join(bytes([(x * 40) % 256, (y * 40) % 256, 128]) for x in range(width))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


IMAGE_URL = "data:image/png;base64," + base64.b64encode(png(8, 8)).decode()


def request(*images: str) -> dict[str, Any]:
    parts = [{"type": "text", "text": SENTINEL}] + [
        {"type": "image_url", "image_url": {"url": u}} for u in images
    ]
    return {"messages": [{"role": "user", "content": parts}], "max_tokens": 4, "temperature": 0}


@pytest.fixture(scope="module")
def projector_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_projector(tmp_path_factory.mktemp("projector") / "mmproj.gguf")


@pytest.fixture
async def engine(tiny_model_path: Path, projector_path: Path) -> AsyncIterator[LlamaEngine]:
    configs = [
        ModelConfig(tiny_model_path, model_id="seeing", n_ctx=512, mmproj=projector_path),
        ModelConfig(tiny_model_path, model_id="blind", n_ctx=512),
    ]
    async with open_llama_engine(configs) as opened:
        yield opened


async def ask(engine: LlamaEngine, document: dict[str, Any]) -> list[dict[str, Any]]:
    return [chunk async for chunk in engine.generate(document)]


async def test_images_become_image_tokens_of_the_prompt(
    engine: LlamaEngine, capfd: pytest.CaptureFixture[str]
) -> None:
    assert {m.model_id: m.vision for m in engine.models()} == {"seeing": True, "blind": False}
    text_only = await ask(engine, {**request(), "model": "seeing"})
    one = await ask(engine, {**request(IMAGE_URL), "model": "seeing"})
    two = await ask(engine, {**request(IMAGE_URL, IMAGE_URL), "model": "seeing"})
    assert_well_formed(one)
    prompts = [chunks[-1]["usage"]["prompt_tokens"] for chunks in (text_only, one, two)]
    # Each image adds its IMAGE_TOKENS embeddings (and the template's marker text around them).
    assert prompts[0] + IMAGE_TOKENS <= prompts[1] and prompts[2] - prompts[1] >= IMAGE_TOKENS
    captured = capfd.readouterr()
    assert SENTINEL not in captured.out + captured.err  # mtmd logs the prompt's text unless routed


async def test_a_model_without_a_projector_refuses_images(engine: LlamaEngine) -> None:
    with pytest.raises(EngineError) as caught:
        await ask(engine, {**request(IMAGE_URL), "model": "blind"})
    assert caught.value.code == "vision_unsupported"


def test_the_handler_reads_data_urls_only(projector_path: Path) -> None:
    handler = DataUrlChatHandler(clip_model_path=str(projector_path), verbose=False)
    assert handler.load_image(IMAGE_URL) == png(8, 8)
    with pytest.raises(EngineError, match="never fetches"):
        handler.load_image("http://127.0.0.1:9/cat.png")


async def test_slots_reading_images_at_once_leave_stderr_where_it_was(
    tiny_model_path: Path, projector_path: Path
) -> None:
    # mtmd's handler swaps the process's stdout/stderr descriptors around image work; two swaps at once
    # can leave them on /dev/null for good (the node's logs would vanish). One at a time.
    before = os.fstat(2)
    config = ModelConfig(tiny_model_path, model_id="seeing", n_ctx=512, slots=3, mmproj=projector_path)
    async with open_llama_engine([config]) as opened:
        for _ in range(IMAGE_ROUNDS):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(ask, opened, {**request(IMAGE_URL, IMAGE_URL), "max_tokens": 1})
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
