"""The GGUF header reader: the facts a node advertises, and only ModelError for anything malformed."""

from __future__ import annotations

import contextlib
import io
import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tp_node.gguf_header import ModelError, parse_gguf_header, quantisation_name, read_gguf_info
from tp_node.testing import tiny_model

EXAMPLES = int(os.environ.get("TP_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_the_tiny_model_header(tiny_model_path: Path) -> None:
    info = read_gguf_info(tiny_model_path)
    assert info.architecture == "llama"
    assert info.name == "token.place tiny random llama"
    assert info.trained_context_length == tiny_model.CONTEXT_LENGTH
    assert (info.file_type, info.quantisation) == (0, "F32")
    assert info.has_chat_template and info.pooling_type is None
    tensors = tiny_model.model_tensors(0, len(tiny_model.vocabulary()[0]))
    assert info.parameter_count == sum(tensor.size for tensor in tensors.values())


def test_quantisation_names_follow_llama_cpp() -> None:
    assert [quantisation_name(n) for n in (0, 1, 15, 32, None, 999)] == [
        "F32",
        "F16",
        "Q4_K_M",
        "BF16",
        "unknown",
        "type-999",
    ]


def header(*parts: bytes) -> io.BytesIO:
    return io.BytesIO(b"".join(parts))


def test_malformed_headers_are_named(tiny_model_path: Path) -> None:
    cases = {
        "not a GGUF file": header(b"GGML", bytes(20)),
        "GGUF version 1": header(b"GGUF", struct.pack("<IQQ", 1, 0, 0)),
        "cut short": header(b"GGUF", struct.pack("<I", 3)),
        "no general.architecture": header(b"GGUF", struct.pack("<IQQ", 3, 0, 0)),
        "more than": header(b"GGUF", struct.pack("<IQQ", 3, 1 << 40, 0)),
        "nested too deep": header(
            b"GGUF",
            struct.pack("<IQQ", 3, 0, 1),
            struct.pack("<Q", 1),
            b"k",
            struct.pack("<IIQIQ", 9, 9, 1, 9, 1),
        ),
    }
    for message, stream in cases.items():
        with pytest.raises(ModelError, match=message):
            parse_gguf_header(stream, "model.gguf")


@FUZZ
@given(garbage=st.binary(max_size=400), keep=st.integers(0, 2000))
def test_garbage_after_a_real_prefix_raises_only_model_error(
    tiny_model_path: Path, garbage: bytes, keep: int
) -> None:
    prefix = tiny_model_path.read_bytes()[:keep]
    with contextlib.suppress(ModelError):
        parse_gguf_header(io.BytesIO(prefix + garbage), "fuzz.gguf")
