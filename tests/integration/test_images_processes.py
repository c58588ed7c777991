"""Image inputs through real processes with the official SDK: a node started with `--mmproj` advertises
`vision` and answers image requests (the fake engine says how many images of which sizes it was sent; the
llama engine runs the tiny model with the tiny projector); a network whose nodes have no projector answers
503 `no_vision_node`; bad images are 400 before anything leaves the gateway."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, cast

import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.integration.gateway_network import BackgroundGateway, RunningGateway, running_gateway
from tests.tp_node.test_images import GIF, JPEG, PNG, data_url, image_message
from tests.tp_node.test_llama_vision import png
from tp_node.engine import FAKE_MODEL_ID, fake_image_summary
from tp_node.testing.tiny_projector import IMAGE_TOKENS, write_tiny_projector

PNG_8X8 = png(8, 8)  # a real image: llama.cpp decodes it


def _gateway(path: Path, node_args: list[str]) -> Iterator[RunningGateway]:
    background = BackgroundGateway(partial(running_gateway, path, node_args=node_args))
    running = background.start()
    try:
        yield running
    finally:
        background.close()


@pytest.fixture(scope="module")
def vision_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenAI]:
    path = tmp_path_factory.mktemp("vision")
    projector = path / "projector.gguf"  # the fake engine does not read it
    projector.write_bytes(b"GGUF")
    for gateway in _gateway(path, ["--mmproj", str(projector)]):
        with OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=60) as sdk:
            yield sdk


@pytest.fixture(scope="module")
def text_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenAI]:
    for gateway in _gateway(tmp_path_factory.mktemp("text"), []):
        with OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=60) as sdk:
            yield sdk


MESSAGES: list[Any] = [image_message(data_url(PNG), data_url(JPEG, "image/jpeg"), data_url(GIF, "image/gif"))]


def test_a_vision_node_reads_the_images_streamed_and_not(vision_client: OpenAI) -> None:
    raw = vision_client.chat.completions.with_raw_response.create(
        model=FAKE_MODEL_ID, messages=MESSAGES, max_tokens=3
    )
    whole = ChatCompletion.model_validate(json.loads(raw.http_response.text))
    summary = fake_image_summary((PNG, JPEG, GIF))
    assert (whole.choices[0].message.content or "").startswith(summary)
    with vision_client.chat.completions.create(
        model=FAKE_MODEL_ID, messages=MESSAGES, max_tokens=3, stream=True
    ) as stream:
        chunks = [ChatCompletionChunk.model_validate(chunk.model_dump()) for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content


def test_remote_and_mislabelled_images_are_refused_with_400(vision_client: OpenAI) -> None:
    cases = [
        (image_message("https://example.com/cat.png"), "never fetches"),
        (image_message(data_url(JPEG, "image/png")), "are not image/png"),
    ]
    for message, why in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            vision_client.chat.completions.create(model=FAKE_MODEL_ID, messages=[cast(Any, message)])
        assert caught.value.code == "invalid_image" and why in caught.value.message


def test_without_a_vision_node_images_get_503_and_text_still_works(text_client: OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        text_client.chat.completions.create(model=FAKE_MODEL_ID, messages=MESSAGES)
    assert caught.value.status_code == 503 and caught.value.code == "no_vision_node"
    answer = text_client.chat.completions.create(
        model=FAKE_MODEL_ID, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert answer.choices[0].message.content


def test_a_llama_node_with_the_tiny_projector_reads_an_image(
    tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("llama-vision")
    projector = write_tiny_projector(path / "mmproj.gguf")
    node_args = ["--model", str(tiny_model_path), "--model-id", "tiny", "--n-ctx", "512"]
    for gateway in _gateway(path, [*node_args, "--mmproj", str(projector)]):
        with OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=60) as sdk:
            options: dict[str, Any] = {"model": "tiny", "max_tokens": 4, "temperature": 0}
            text = sdk.chat.completions.create(messages=[{"role": "user", "content": "hi"}], **options)
            seen = sdk.chat.completions.create(
                messages=[cast(Any, image_message(data_url(PNG_8X8)))], **options
            )
            assert seen.usage is not None and text.usage is not None
            assert seen.usage.prompt_tokens > text.usage.prompt_tokens + IMAGE_TOKENS
            with sdk.chat.completions.create(
                messages=[cast(Any, image_message(data_url(PNG_8X8)))], stream=True, **options
            ) as stream:
                streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            assert streamed == seen.choices[0].message.content
