"""Images in chat requests (docs/PROTOCOL.md section 6): data URLs only, their media type matching their
bytes, within IMAGE_BYTES_MAX, IMAGES_PER_REQUEST_MAX and IMAGES_BYTES_TOTAL_MAX, as the node checks them
(tp_net.protocol.inference_contract, shared with the gateway); and the fake engine reads them only when it is
a vision engine (--mmproj)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.tp_node.chunk_shapes import assert_well_formed, text_of
from tp_net.protocol.inference_contract import (
    IMAGE_BYTES_MAX,
    IMAGES_BYTES_TOTAL_MAX,
    IMAGES_PER_REQUEST_MAX,
    EngineError,
    check_images,
    image_bytes,
)
from tp_node.engine import FakeEngine, fake_image_summary
from tp_node.inference import parse_request

PNG = b"\x89PNG\r\n\x1a\n" + bytes(24)
JPEG = b"\xff\xd8\xff\xe0" + bytes(16)
GIF = b"GIF89a" + bytes(10)
WEBP = b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(8)


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def image_message(*urls: str, text: str = "what is this?") -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return {"role": "user", "content": parts}


def refusal(url: object) -> str:
    with pytest.raises(EngineError) as caught:
        image_bytes(url)
    assert caught.value.code == "invalid_image"
    return str(caught.value)


@pytest.mark.parametrize(
    ("data", "media_type"),
    [(PNG, "image/png"), (JPEG, "image/jpeg"), (GIF, "image/gif"), (WEBP, "image/webp")],
)
def test_each_supported_type_is_read_back_to_its_bytes(data: bytes, media_type: str) -> None:
    assert image_bytes(data_url(data, media_type)) == data


def test_remote_urls_are_refused_saying_the_node_never_fetches() -> None:
    for url in ("https://example.com/cat.png", "http://127.0.0.1/cat.png"):
        assert "never fetches" in refusal(url)


@pytest.mark.parametrize(
    "url",
    [
        data_url(PNG, "image/svg+xml"),  # a type the projector does not read (and svg is a script carrier)
        data_url(PNG, "image/bmp"),
        "data:image/png,rawbytes",  # not base64
        "data:image/png;base64,@@@@",
        "file:///etc/passwd",
        "",
        None,
        42,
    ],
)
def test_other_urls_and_types_are_refused(url: object) -> None:
    refusal(url)


@pytest.mark.parametrize(
    ("data", "media_type"),
    [(JPEG, "image/png"), (PNG, "image/jpeg"), (b"RIFF\0\0\0\0WAVE", "image/webp"), (b"<svg/>", "image/gif")],
)
def test_bytes_that_are_not_the_named_type_are_refused(data: bytes, media_type: str) -> None:
    assert "are not" in refusal(data_url(data, media_type))


def test_one_image_over_its_limit_is_refused_and_one_at_it_is_not() -> None:
    at_limit = PNG + bytes(IMAGE_BYTES_MAX - len(PNG))
    assert len(image_bytes(data_url(at_limit))) == IMAGE_BYTES_MAX
    assert str(IMAGE_BYTES_MAX) in refusal(data_url(at_limit + b"\0"))
    # A URL too long to hold an image within the limit is refused before any decoding.
    assert str(IMAGE_BYTES_MAX) in refusal("data:image/png;base64," + "A" * (IMAGE_BYTES_MAX * 2))


def test_count_and_total_limits() -> None:
    small = data_url(PNG)
    assert len(check_images([small] * IMAGES_PER_REQUEST_MAX)) == IMAGES_PER_REQUEST_MAX
    with pytest.raises(EngineError, match=f"at most {IMAGES_PER_REQUEST_MAX} images"):
        check_images([small] * (IMAGES_PER_REQUEST_MAX + 1))
    each = PNG + bytes(IMAGES_BYTES_TOTAL_MAX // 2 - len(PNG))
    assert len(check_images([data_url(each)] * 2)) == 2
    with pytest.raises(EngineError, match=f"{IMAGES_BYTES_TOTAL_MAX} bytes in all"):
        check_images([data_url(each + b"\0")] * 2)


def test_the_node_keeps_image_parts_in_user_messages_and_checks_them() -> None:
    request = parse_request({"messages": [image_message(data_url(PNG), data_url(GIF, "image/gif"))]})
    assert request.images == (PNG, GIF)
    assert request.texts() == ["what is this?"]  # moderation reads the text, never the image data
    assert [part["type"] for part in request.messages[0]["content"]] == ["text", "image_url", "image_url"]
    text_only = parse_request({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
    assert text_only.messages[0]["content"] == "hi" and text_only.images == ()


@pytest.mark.parametrize(
    "messages",
    [
        [image_message("https://example.com/cat.png")],
        [image_message(data_url(JPEG, "image/png"))],
        [image_message(*[data_url(PNG)] * (IMAGES_PER_REQUEST_MAX + 1))],
        [{"role": "user", "content": [{"type": "image_url", "image_url": "data:image/png;base64,"}]}],
    ],
)
def test_the_node_refuses_bad_images(messages: list[dict[str, Any]]) -> None:
    with pytest.raises(EngineError) as caught:
        parse_request({"messages": messages})
    assert caught.value.code in ("invalid_image", "invalid_messages")


def test_only_user_messages_carry_images() -> None:
    for role in ("system", "assistant", "tool"):
        message = {**image_message(data_url(PNG)), "role": role, "tool_call_id": "c"}
        if role != "tool":
            del message["tool_call_id"]
        with pytest.raises(EngineError, match="only user messages"):
            parse_request({"messages": [message]})


async def test_a_vision_fake_answers_with_what_it_saw_and_a_plain_one_refuses() -> None:
    request = {"messages": [image_message(data_url(PNG), data_url(JPEG, "image/jpeg"))], "max_tokens": 3}
    chunks = [chunk async for chunk in FakeEngine(vision=True).generate(request)]
    assert text_of(chunks).startswith(fake_image_summary((PNG, JPEG)))
    assert fake_image_summary((PNG, JPEG)) == f"[2 images: {len(PNG)}, {len(JPEG)} bytes] "
    assert_well_formed(chunks)
    assert FakeEngine(vision=True).models()[0].vision and not FakeEngine().models()[0].vision
    with pytest.raises(EngineError) as caught:
        async for _ in FakeEngine().generate(request):
            pass
    assert caught.value.code == "vision_unsupported"
