"""The other OpenAI objects: embeddings lists, models, and the SSE framing of a stream."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterable, Mapping
from typing import Any

from tp_gateway.openai_chunks import Embedding, ResponseReader
from tp_gateway.openai_errors import ApiError, malformed_chunk

OWNER = "token.place"
SSE_DONE = b"data: [DONE]\n\n"


def _encoded(vector: tuple[float, ...], encoding_format: str) -> list[float] | str:
    """The vector as floats, or as base64 of little-endian float32 (the OpenAI SDK's default request)."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return list(vector)


def _vectors(reader: ResponseReader, chunks: Iterable[object]) -> dict[int, tuple[float, ...]]:
    vectors: dict[int, tuple[float, ...]] = {}
    for chunk in chunks:
        piece = reader.read(chunk)
        if isinstance(piece, Embedding):
            if piece.index in vectors:
                raise malformed_chunk("two embeddings with the same index")
            vectors[piece.index] = piece.vector
    return vectors


def embeddings_response(
    model: str, chunks: Iterable[object], *, encoding_format: str = "float", input_count: int | None = None
) -> dict[str, Any]:
    """The embeddings `list` object from a node's whole response, items sorted by index.

    ApiError for an error document among the chunks, or a 502 when the embeddings are not one per input
    (`input_count`, when given; else indices 0..n-1) of one size, followed by a final chunk.
    """
    reader = ResponseReader("embedding")
    vectors = _vectors(reader, chunks)
    usage = reader.usage().to_json()
    count = len(vectors) if input_count is None else input_count
    if sorted(vectors) != list(range(count)):
        raise malformed_chunk("embeddings are missing or have indices beyond the inputs")
    if len({len(vector) for vector in vectors.values()}) > 1:
        raise malformed_chunk("embeddings of different sizes")
    data = [
        {"object": "embedding", "index": index, "embedding": _encoded(vectors[index], encoding_format)}
        for index in range(count)
    ]
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": usage["prompt_tokens"], "total_tokens": usage["total_tokens"]},
    }


def model_object(model_id: str, created: int, identity: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An OpenAI model object; `identity` adds token.place's fields (the GGUF the id stands for)."""
    return {"id": model_id, "object": "model", "created": created, "owned_by": OWNER, **(identity or {})}


def model_list(
    models: Mapping[str, int], identities: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """The `list` of models from {model id: created timestamp}, sorted by id."""
    found = identities or {}
    return {
        "object": "list",
        "data": [
            model_object(model_id, models[model_id], found.get(model_id)) for model_id in sorted(models)
        ],
    }


def json_bytes(obj: Mapping[str, Any]) -> bytes:
    """Compact JSON, ASCII-only (no encoding surprises on any client) and never NaN (not JSON)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("ascii")


def sse_event(obj: Mapping[str, Any]) -> bytes:
    return b"data: " + json_bytes(obj) + b"\n\n"


def sse_error(error: ApiError) -> bytes:
    """The event that ends a stream which failed after its first chunk (the SDK raises APIError on it)."""
    return sse_event(error.to_json())
