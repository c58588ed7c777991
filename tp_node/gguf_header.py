"""What a node says about a GGUF model, read from the file's header without loading it.

The GGUF header (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md) is: magic `GGUF`, version,
tensor count, metadata count, the metadata key/values, then one info record per tensor (name, shape, type,
offset). We read only that (a few MB at most, even for a 70B model): the architecture, trained context
length, file type (quantisation), pooling type, chat template presence, and the parameter count (the sum
of the tensor shapes). Anything malformed raises ModelError naming the file; nothing is trusted for sizes
beyond the limits below.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tp_crypto.errors import TokenPlaceError

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)
STRING_BYTES_MAX = 64 * 1024 * 1024
ARRAY_ITEMS_MAX = 1 << 26
METADATA_ITEMS_MAX = 1 << 16
TENSORS_MAX = 1 << 20
TENSOR_DIMS_MAX = 8
ARRAY_DEPTH_MAX = 2  # arrays of arrays exist in the spec; deeper nesting is refused

# Value type id -> struct format of one scalar (8 = string, 9 = array are handled apart).
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_WANTED_SUFFIXES = (".context_length", ".pooling_type")
_WANTED_KEYS = ("general.architecture", "general.name", "general.file_type", "tokenizer.chat_template")


class ModelError(TokenPlaceError):
    """A model file is missing, unreadable, not GGUF, or failed verification."""


@dataclass(frozen=True)
class GgufInfo:
    architecture: str
    name: str
    parameter_count: int
    file_type: int | None
    trained_context_length: int | None
    pooling_type: int | None
    has_chat_template: bool

    @property
    def quantisation(self) -> str:
        return quantisation_name(self.file_type)


def quantisation_name(file_type: int | None) -> str:
    """GGUF general.file_type as llama.cpp names it: 15 -> "Q4_K_M", 0 -> "F32"."""
    if file_type is None:
        return "unknown"
    import gguf  # the node extra; only needed here

    try:
        name = gguf.LlamaFileType(file_type).name
    except ValueError:
        return f"type-{file_type}"
    return str(name).removeprefix("MOSTLY_").removeprefix("ALL_")


class _Reader:
    def __init__(self, stream: BinaryIO, source: str) -> None:
        self._stream = stream
        self._source = source

    def fail(self, why: str) -> ModelError:
        return ModelError(f"{self._source} is not a valid GGUF file ({why})")

    def bytes(self, count: int) -> bytes:
        data = self._stream.read(count)
        if len(data) != count:
            raise self.fail("the header is cut short")
        return data

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.bytes(struct.calcsize(fmt)))[0]

    def count(self, limit: int, what: str) -> int:
        value = int(self.scalar("<Q"))
        if value > limit:
            raise self.fail(f"{value} {what} is more than {limit}")
        return value

    def string(self) -> str:
        return self.bytes(self.count(STRING_BYTES_MAX, "string bytes")).decode("utf-8", errors="replace")

    def value(self, value_type: int, keep: bool, depth: int = 0) -> Any:
        if value_type in _SCALARS:
            return self.scalar(_SCALARS[value_type])
        if value_type == _STRING:
            text = self.string()
            return text if keep else None
        if value_type == _ARRAY and depth < ARRAY_DEPTH_MAX:
            item_type = int(self.scalar("<I"))
            for _ in range(self.count(ARRAY_ITEMS_MAX, "array items")):
                self.value(item_type, keep=False, depth=depth + 1)
            return None
        raise self.fail(f"value type {value_type} is unknown or nested too deep")


def _metadata(reader: _Reader, count: int) -> dict[str, Any]:
    wanted: dict[str, Any] = {}
    for _ in range(count):
        key = reader.string()
        keep = key in _WANTED_KEYS or key.endswith(_WANTED_SUFFIXES)
        value = reader.value(int(reader.scalar("<I")), keep)
        if keep:
            wanted[key] = value
    return wanted


def _parameter_count(reader: _Reader, count: int) -> int:
    total = 0
    for _ in range(count):
        reader.string()
        dims = int(reader.scalar("<I"))
        if dims > TENSOR_DIMS_MAX:
            raise reader.fail(f"a tensor with {dims} dimensions")
        total += math.prod(int(reader.scalar("<Q")) for _ in range(dims))
        reader.bytes(4 + 8)  # type, offset
    return total


def read_gguf_info(path: Path) -> GgufInfo:
    """The header facts of the GGUF file at `path`; ModelError if it is missing or not GGUF."""
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist or is not a regular file")
    with path.open("rb") as stream:
        return parse_gguf_header(stream, str(path))


def parse_gguf_header(stream: BinaryIO, source: str) -> GgufInfo:
    """Reads only the header from `stream`; ModelError naming `source` for anything malformed."""
    reader = _Reader(stream, source)
    if stream.read(4) != GGUF_MAGIC:
        raise ModelError(f"{source} is not a GGUF file (it does not start with {GGUF_MAGIC!r})")
    version = reader.scalar("<I")
    if version not in GGUF_VERSIONS:
        raise reader.fail(f"GGUF version {version}; supported: {GGUF_VERSIONS}")
    tensors = reader.count(TENSORS_MAX, "tensors")
    metadata = _metadata(reader, reader.count(METADATA_ITEMS_MAX, "metadata items"))
    parameters = _parameter_count(reader, tensors)
    architecture = metadata.get("general.architecture")
    if not isinstance(architecture, str) or not architecture:
        raise reader.fail("no general.architecture")
    return GgufInfo(
        architecture=architecture,
        name=str(metadata.get("general.name") or source),
        parameter_count=parameters,
        file_type=_optional_int(metadata.get("general.file_type")),
        trained_context_length=_optional_int(metadata.get(f"{architecture}.context_length")),
        pooling_type=_optional_int(metadata.get(f"{architecture}.pooling_type")),
        has_chat_template="tokenizer.chat_template" in metadata,
    )


def _optional_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None
