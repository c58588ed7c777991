"""The inference service's contract (docs/PROTOCOL.md section 6): its name, the request document's fields and
every limit on them, sans-IO.

One home for what the gateway and the node must agree on: the node checks a request document against these
(`tp_node.inference.parse_request`), and the gateway applies the same limits to the OpenAI body it turns into
that document (`tp_gateway.openai_requests`), so a request the gateway accepts is one the node serves. The
rules both sides run word for word (`n`, `logprobs`, `logit_bias`) are here too; they raise EngineError,
whose `code` names the field.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from typing import Any

from tp_net.protocol.errors import ServiceError

INFERENCE_SERVICE = "inference"

KINDS = ("chat", "completion", "embedding")
ROLES = ("system", "developer", "user", "assistant", "tool")
TOOL_CHOICE_MODES = ("none", "auto", "required")
RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")

MODEL_ID_CHARS_MAX = 128
MESSAGES_MAX = 1024
STOP_SEQUENCES_MAX = 4
STOP_SEQUENCE_CHARS_MAX = 256
EMBEDDING_INPUTS_MAX = 256
TOOLS_MAX = 128
TOOL_NAME_CHARS_MAX = 64  # tool and response-format schema names
TOOL_NAME = re.compile(rf"[A-Za-z0-9_-]{{1,{TOOL_NAME_CHARS_MAX}}}")
MAX_TOKENS_LIMIT = 100_000
SEED_ABS_MAX = 2**64
# name -> (lowest, highest) of the sampling numbers (OpenAI's ranges).
SAMPLING_RANGES = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}
CHOICES_MAX = 8  # each choice is a whole generation on the request's slot, one after the other
TOP_LOGPROBS_MAX = 20  # alternatives per token (OpenAI's own limit)
LOGIT_BIAS_ENTRIES_MAX = 300
LOGIT_BIAS_ABS_MAX = 100.0
TOKEN_ID_MAX = 2**31 - 1  # llama.cpp's llama_token is an int32; the engine checks against the vocabulary
TOKEN_ID = re.compile(r"0|[1-9][0-9]{0,9}")

# `pad`: a string the node ignores, which brings the request to a size bucket
# (tp_net.protocol.traffic_shaping); a response message that is only {`pad`: string} is a dummy the client
# drops.
PAD_FIELD = "pad"
COMMON_FIELDS = frozenset({"kind", "model", PAD_FIELD})
GENERATION_FIELDS = frozenset(
    {"max_tokens", "stop", "seed", *SAMPLING_RANGES} | {"n", "logprobs", "logit_bias"}
)
FIELDS_BY_KIND = {
    "chat": COMMON_FIELDS
    | GENERATION_FIELDS
    | {"messages", "response_format", "tools", "tool_choice", "parallel_tool_calls"},
    "completion": COMMON_FIELDS | GENERATION_FIELDS | {"prompt"},
    "embedding": COMMON_FIELDS | {"input"},
}
MESSAGE_FIELDS = frozenset({"role", "content", "name", "tool_calls", "tool_call_id"})


class EngineError(ServiceError):
    """A request the engine cannot serve; `code` is machine-readable, the message safe to show."""


def check_n(value: object) -> int:
    """`n`: how many choices (None: one)."""
    if value is None:
        return 1
    if type(value) is not int or not 1 <= value <= CHOICES_MAX:
        raise EngineError("invalid_n", f"n must be an integer in 1..{CHOICES_MAX}")
    return value


def check_top_logprobs(value: object) -> int:
    """How many alternatives to return with each token's log probability."""
    if type(value) is not int or not 0 <= value <= TOP_LOGPROBS_MAX:
        raise EngineError("invalid_logprobs", f"logprobs must be an integer in 0..{TOP_LOGPROBS_MAX}")
    return value


def check_logit_bias(value: object) -> dict[int, float]:
    """{token id as a decimal string: bias}; None or {} is no bias."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > LOGIT_BIAS_ENTRIES_MAX:
        raise EngineError(
            "invalid_logit_bias", f"logit_bias must be a map of at most {LOGIT_BIAS_ENTRIES_MAX} entries"
        )
    biases: dict[int, float] = {}
    for key, bias in value.items():
        if not (isinstance(key, str) and TOKEN_ID.fullmatch(key) and int(key) <= TOKEN_ID_MAX):
            raise EngineError(
                "invalid_logit_bias", "logit_bias keys must be token ids (decimal integer strings)"
            )
        if isinstance(bias, bool) or not isinstance(bias, int | float) or not abs(bias) <= LOGIT_BIAS_ABS_MAX:
            raise EngineError(
                "invalid_logit_bias",
                f"logit_bias values must be numbers in -{LOGIT_BIAS_ABS_MAX:g}..{LOGIT_BIAS_ABS_MAX:g}",
            )
        biases[int(key)] = float(bias)
    return biases


# Images (chat `image_url` content parts; docs/PROTOCOL.md section 6). They travel in the request document as
# data URLs (base64 is 4/3 of the bytes, and the whole request stays under REQUEST_BYTES_MAX); remote URLs
# are refused: a node never fetches. The media type is checked against the bytes' magic number.
IMAGE_BYTES_MAX = 512 * 1024  # one image, decoded
IMAGES_PER_REQUEST_MAX = 8
IMAGES_BYTES_TOTAL_MAX = 640 * 1024  # all images of a request, decoded
IMAGE_URL_CHARS_MAX = len("data:image/jpeg;base64,") + (IMAGE_BYTES_MAX + 2) // 3 * 4
# media type -> the magic numbers its bytes start with
IMAGE_MAGIC = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),  # and "WEBP" at byte 8
}
DATA_URL = re.compile(r"data:(image/[a-z]+);base64,([A-Za-z0-9+/]*={0,2})")


def image_bytes(url: object) -> bytes:
    """The image a content part's URL carries: a base64 data URL of a PNG, JPEG, WebP or GIF whose bytes
    are what its media type says; EngineError (code `invalid_image`) naming why not."""
    if not isinstance(url, str) or not url:
        raise EngineError("invalid_image", "image_url.url must be a data URL string")
    if len(url) > IMAGE_URL_CHARS_MAX:
        raise EngineError("invalid_image", f"an image may be at most {IMAGE_BYTES_MAX} bytes")
    if url.startswith(("http://", "https://")):
        raise EngineError(
            "invalid_image",
            "remote image URLs are refused (a node never fetches anything); send the image inline as a "
            "data:image/...;base64 URL",
        )
    match = DATA_URL.fullmatch(url)
    if match is None or match.group(1) not in IMAGE_MAGIC:
        raise EngineError(
            "invalid_image",
            f"image_url.url must be a base64 data URL of type {', '.join(sorted(IMAGE_MAGIC))}",
        )
    try:
        data = binascii.a2b_base64(match.group(2), strict_mode=True)
    except binascii.Error:
        raise EngineError("invalid_image", "the image's base64 is malformed") from None
    if len(data) > IMAGE_BYTES_MAX:
        raise EngineError("invalid_image", f"an image may be at most {IMAGE_BYTES_MAX} bytes")
    media_type = match.group(1)
    webp_ok = media_type != "image/webp" or data[8:12] == b"WEBP"
    if not (data.startswith(IMAGE_MAGIC[media_type]) and webp_ok):
        raise EngineError("invalid_image", f"the image's bytes are not {media_type}")
    return data


def check_images(urls: list[object]) -> list[bytes]:
    """Every image of a request (in order), within the count and total size limits."""
    if len(urls) > IMAGES_PER_REQUEST_MAX:
        raise EngineError("invalid_image", f"a request may carry at most {IMAGES_PER_REQUEST_MAX} images")
    images, total = [], 0
    for url in urls:
        images.append(data := image_bytes(url))
        total += len(data)
        if total > IMAGES_BYTES_TOTAL_MAX:
            raise EngineError(
                "invalid_image", f"a request's images may be at most {IMAGES_BYTES_TOTAL_MAX} bytes in all"
            )
    return images


def image_part(url: object) -> dict[str, Any]:
    """A message content part carrying an image, as the request document holds it."""
    return {"type": "image_url", "image_url": {"url": url}}


def image_urls(document: Mapping[str, Any]) -> list[object]:
    """The URLs of the image parts of a chat request document's messages (what needs a vision model)."""
    messages = document.get("messages")
    return [
        part["image_url"].get("url")
        for message in (messages if isinstance(messages, list) else [])
        if isinstance(message, dict) and isinstance(message.get("content"), list)
        for part in message["content"]
        if isinstance(part, dict)
        and part.get("type") == "image_url"
        and isinstance(part.get("image_url"), dict)
    ]


# JSON schemas (tool parameters, response_format) become llama.cpp grammars, whose x{m,n} is m..n copies of
# x: every bound is checked before a grammar is built (else {"maxLength": 10**9} would exhaust the node's
# memory), each on its own and all of a request's together, and so is the schema's size.
SCHEMA_REPEAT_MAX = 4096  # one length or count bound, or one {m,n} in a pattern
SCHEMA_REPEATS_TOTAL_MAX = 16_384  # all of them in a request's schemas together
SCHEMA_VALUES_MAX = 16_384  # maps, lists and scalars in a request's schemas together
REPEAT_KEYWORDS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")
PATTERN_REPEAT = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


def _repeats(key: str, item: object) -> list[float]:
    if key in REPEAT_KEYWORDS and isinstance(item, int | float) and not isinstance(item, bool):
        return [item]
    if key == "pattern" and isinstance(item, str):
        return [float(bound) for match in PATTERN_REPEAT.finditer(item) for bound in match.groups() if bound]
    return []


def check_schema_size(schema: object, code: str) -> None:
    """EngineError `code` when `schema` (or a list of schemas) would make too large a grammar."""
    pending, values, total = [schema], 0, 0.0
    while pending:
        value = pending.pop()
        values += 1
        if values > SCHEMA_VALUES_MAX:
            raise EngineError(code, f"the schemas have more than {SCHEMA_VALUES_MAX} values")
        if isinstance(value, dict):
            for key, item in value.items():
                for bound in _repeats(key, item):
                    if not bound <= SCHEMA_REPEAT_MAX:  # NaN too
                        raise EngineError(code, f"a schema has {key} over {SCHEMA_REPEAT_MAX}")
                    total += bound
                pending.append(item)
        elif isinstance(value, list):
            pending.extend(value)
    if total > SCHEMA_REPEATS_TOTAL_MAX:
        raise EngineError(
            code, f"the schemas' length and count bounds add up to more than {SCHEMA_REPEATS_TOTAL_MAX}"
        )
