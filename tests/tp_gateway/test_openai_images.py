"""Image inputs at the gateway: `image_url` parts with data URLs are checked with the node's own rules
(tp_net.protocol.inference_contract) and carried in the request document; remote URLs are refused naming why;
and a request with images goes only to nodes whose signed descriptor says `vision` for the model."""

from __future__ import annotations

import dataclasses
import random
from typing import Any, cast

import pytest

from tests.tp_net.directory_factories import (
    NETWORK,
    NODE_SEED_BASE,
    PUBLISHED,
    RELAY_SEED_BASE,
    T0,
    identity,
    model_offer,
    node_descriptor,
    relay_descriptor,
)
from tests.tp_node.test_images import GIF, JPEG, PNG, data_url, image_message
from tp_gateway.app import api_error
from tp_gateway.openai_errors import ApiError
from tp_gateway.openai_requests import parse_chat
from tp_gateway.overlay import Overlay, OverlayError
from tp_net.protocol.bootstrap_config import Bootstrap
from tp_net.protocol.descriptors import NodeDescriptor, sign_descriptor
from tp_net.protocol.directory import Directory
from tp_net.protocol.inference_contract import IMAGE_BYTES_MAX, IMAGES_BYTES_TOTAL_MAX, IMAGES_PER_REQUEST_MAX
from tp_node.inference import parse_request

MODEL = "vision-model"


def chat_with(*messages: dict[str, Any]) -> dict[str, Any]:
    return parse_chat({"model": MODEL, "messages": list(messages)}).document()


def refused(*messages: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        chat_with(*messages)
    assert caught.value.status == 400
    return caught.value


def test_images_travel_as_data_url_parts_the_node_reads() -> None:
    sent = image_message(data_url(PNG), data_url(GIF, "image/gif"))
    sent["content"][1]["image_url"]["detail"] = "low"  # accepted; the projector has one resolution
    document = chat_with({"role": "system", "content": "be brief"}, sent)
    assert document["messages"][1]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": data_url(PNG)}},
        {"type": "image_url", "image_url": {"url": data_url(GIF, "image/gif")}},
    ]
    assert parse_request(document).images == (PNG, GIF)


def test_a_remote_url_is_refused_naming_why() -> None:
    error = refused(image_message("https://example.com/cat.png"))
    assert (error.param, error.code) == ("messages[0].content[1].image_url.url", "invalid_image")
    assert "never fetches" in str(error)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (data_url(JPEG, "image/png"), "are not image/png"),
        (data_url(PNG, "image/svg+xml"), "base64 data URL of type"),
        (data_url(PNG + bytes(IMAGE_BYTES_MAX)), f"at most {IMAGE_BYTES_MAX} bytes"),
    ],
)
def test_a_bad_image_is_refused_naming_the_part(url: str, why: str) -> None:
    error = refused(image_message(url))
    assert (error.param, error.code) == ("messages[0].content[1].image_url.url", "invalid_image")
    assert why in str(error)


def test_count_and_total_are_checked_across_messages() -> None:
    half = data_url(PNG + bytes(IMAGES_BYTES_TOTAL_MAX // 2))
    error = refused(image_message(half), {"role": "assistant", "content": "ok"}, image_message(half))
    assert (error.param, error.code) == ("messages", "invalid_image")
    many = [image_message(data_url(PNG))] * (IMAGES_PER_REQUEST_MAX + 1)
    assert f"at most {IMAGES_PER_REQUEST_MAX} images" in str(refused(*many))


def test_images_only_in_user_messages() -> None:
    message = {**image_message(data_url(PNG)), "role": "system"}
    error = refused(message)
    assert (error.param, error.code) == ("messages[0].content[1].type", "unsupported_value")


# --- routing -----------------------------------------------------------------------------------------


def _node(number: int, vision: bool) -> NodeDescriptor:
    offer = dataclasses.replace(model_offer(MODEL), vision=vision)
    return node_descriptor(identity(NODE_SEED_BASE + number), number=number, models=(offer,))


def _overlay(*nodes: NodeDescriptor) -> Overlay:
    relays = [relay_descriptor(identity(RELAY_SEED_BASE + n), number=n) for n in range(1, 4)]
    directory = Directory(
        NETWORK, T0, T0 + 60, T0 + 120, {r.node_id: r for r in relays}, {n.node_id: n for n in nodes}
    )
    overlay = Overlay(Bootstrap(NETWORK, 1, 300, ()), cast(Any, None), rng=random.Random(5))
    overlay.use_directory(directory)
    return overlay


def test_the_vision_flag_is_signed_into_the_descriptor() -> None:
    who = identity(NODE_SEED_BASE + 1)
    for vision in (True, False):
        opened = sign_descriptor(who, _node(1, vision)).open(PUBLISHED + 1)
        assert isinstance(opened, NodeDescriptor) and opened.models[0].vision is vision


def test_a_request_with_images_is_routed_only_to_vision_nodes() -> None:
    plain, seeing = _node(1, vision=False), _node(2, vision=True)
    overlay = _overlay(plain, seeing)
    assert overlay.directory is not None
    with_image = chat_with(image_message(data_url(PNG)))
    text_only = chat_with({"role": "user", "content": "hi"})
    assert overlay._candidates(MODEL, with_image) == [seeing]
    assert {n.node_id for n in overlay._candidates(MODEL, text_only)} == {
        plain.node_id,
        seeing.node_id,
    }


async def test_without_a_vision_node_the_answer_is_a_503_that_says_so() -> None:
    overlay = _overlay(_node(1, vision=False))
    with pytest.raises(OverlayError) as caught:
        async for _ in overlay.generate(MODEL, chat_with(image_message(data_url(PNG)))):
            pass
    assert caught.value.code == "no_vision_node"
    error = api_error(caught.value, MODEL)
    assert (error.status, error.code) == (503, "no_vision_node")
    assert "--mmproj" in str(error)
