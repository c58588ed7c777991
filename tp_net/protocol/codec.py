"""The frame codec: the only module that touches msgpack.

A frame is a msgpack array `[tag, field, ...]`; a batch (the plaintext of one link message) is an array of
frames. Decoding enforces every limit before memory is spent on it: the input length is checked first, and
msgpack itself refuses any string, bin, array or map header above our limits before allocating it. Frames hold
only scalars and byte strings, so any container inside a frame is refused. Whatever the input, decoding
raises only RemoteProtocolError.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Any

import msgpack

from tp_crypto.errors import LocalProtocolError, RemoteProtocolError
from tp_net.protocol.document_scan import scan_document
from tp_net.protocol.frames import LINK_FRAME_TYPES, Frame
from tp_net.protocol.relay_messages import RELAY_MESSAGE_TYPES

# Noise caps one transport message at 65535 bytes, 16 of them the MAC.
BATCH_BYTES_MAX = 65535 - 16
FRAMES_PER_BATCH_MAX = 1024
FRAME_FIELDS_MAX = 8
BIN_BYTES_MAX = BATCH_BYTES_MAX
STR_BYTES_MAX = 1024

_SCALARS = (int, bytes, str, bool, type(None))


@dataclasses.dataclass(frozen=True)
class _FrameSpec:
    cls: type[Frame]
    field_types: tuple[tuple[type, ...], ...]


def _accepted_types(annotation: Any) -> tuple[type, ...]:
    if isinstance(annotation, types.UnionType):
        return tuple(arg for arg in annotation.__args__)
    return (annotation,)


def _spec(cls: type[Frame]) -> _FrameSpec:
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    return _FrameSpec(cls, tuple(_accepted_types(hints[field.name]) for field in fields))


LINK_FRAMES: dict[int, _FrameSpec] = {cls.TAG: _spec(cls) for cls in LINK_FRAME_TYPES}
RELAY_MESSAGES: dict[int, _FrameSpec] = {cls.TAG: _spec(cls) for cls in RELAY_MESSAGE_TYPES}


def encode_frame(frame: Frame) -> bytes:
    return _pack(_frame_to_list(frame))


def pack_batches(frames: Sequence[Frame], batch_bytes_max: int = BATCH_BYTES_MAX) -> list[bytes]:
    """Encode frames into as few batches as fit `batch_bytes_max` each, keeping their order.

    Each frame is packed once; a batch is a msgpack array header followed by its packed frames.
    """
    batches: list[bytes] = []
    pending: list[bytes] = []
    pending_bytes = 0
    for frame in frames:
        packed = _pack(_frame_to_list(frame))
        if len(packed) + _ARRAY_HEADER_BYTES_MAX > batch_bytes_max:
            raise LocalProtocolError(f"{type(frame).__name__} of {len(packed)} bytes cannot fit in one batch")
        full = len(pending) == FRAMES_PER_BATCH_MAX
        if full or pending_bytes + len(packed) + _ARRAY_HEADER_BYTES_MAX > batch_bytes_max:
            batches.append(_array_header(len(pending)) + b"".join(pending))
            pending, pending_bytes = [], 0
        pending.append(packed)
        pending_bytes += len(packed)
    if pending:
        batches.append(_array_header(len(pending)) + b"".join(pending))
    return batches


_ARRAY_HEADER_BYTES_MAX = 3


def _array_header(count: int) -> bytes:
    """msgpack's header for an array of `count` items (fixarray or array16)."""
    if count < 16:
        return bytes([0x90 | count])
    return b"\xdc" + count.to_bytes(2, "big")


def decode_frame(data: bytes, registry: dict[int, _FrameSpec] = LINK_FRAMES) -> Frame:
    return _list_to_frame(_unpack(data), registry)


def decode_batch(data: bytes) -> list[Frame]:
    """Decode one batch; anything malformed or over a limit raises RemoteProtocolError."""
    items = _unpack(data)
    if not isinstance(items, list):
        raise RemoteProtocolError("a batch must be an array of frames")
    return [_list_to_frame(item, LINK_FRAMES) for item in items]


_RELAY_LENGTH_BYTES = 2


def encode_relay_payload(message: Frame, payload_bytes: int) -> bytes:
    """A relay message as exactly `payload_bytes` bytes: 2-byte length, msgpack, zero padding."""
    framed = _framed_relay_message(message, payload_bytes)
    return _padded([framed], len(framed), payload_bytes)


def decode_relay_payload(payload: bytes) -> Frame:
    """The one relay message in a cell payload; RemoteProtocolError for anything malformed or for more."""
    messages = decode_relay_messages(payload)
    if len(messages) != 1:
        raise RemoteProtocolError(f"expected one relay message in the cell, found {len(messages)}")
    return messages[0]


def decode_relay_messages(payload: bytes) -> list[Frame]:
    """The relay messages in a cell payload, in order: length-prefixed, ended by a zero length (the padding)
    or the payload's end. At least one; RemoteProtocolError for anything malformed."""
    messages: list[Frame] = []
    offset = 0
    while offset + _RELAY_LENGTH_BYTES <= len(payload):
        length = int.from_bytes(payload[offset : offset + _RELAY_LENGTH_BYTES], "big")
        if length == 0:
            break
        start = offset + _RELAY_LENGTH_BYTES
        if length > len(payload) - start:
            raise RemoteProtocolError("relay message length exceeds the cell")
        messages.append(_list_to_frame(_unpack(payload[start : start + length]), RELAY_MESSAGES))
        offset = start + length
    if not messages:
        raise RemoteProtocolError("a relay cell without a message")
    return messages


def pack_relay_payloads(messages: Sequence[Frame], payload_bytes: int) -> list[bytes]:
    """Messages in order, as few cell payloads as hold them (each exactly `payload_bytes`): a stream's
    small messages (a request, a few tokens, its END) share one cell instead of taking one each."""
    payloads: list[bytes] = []
    pending: list[bytes] = []
    used = 0
    for message in messages:
        framed = _framed_relay_message(message, payload_bytes)
        if used + len(framed) > payload_bytes:
            payloads.append(_padded(pending, used, payload_bytes))
            pending, used = [], 0
        pending.append(framed)
        used += len(framed)
    if pending:
        payloads.append(_padded(pending, used, payload_bytes))
    return payloads


def _framed_relay_message(message: Frame, payload_bytes: int) -> bytes:
    """The 2-byte length and msgpack of one relay message; LocalProtocolError if no payload can hold it."""
    packed = _pack(_frame_to_list(message))
    if len(packed) + _RELAY_LENGTH_BYTES > payload_bytes:
        raise LocalProtocolError(f"{type(message).__name__} of {len(packed)} bytes does not fit in a cell")
    return len(packed).to_bytes(_RELAY_LENGTH_BYTES, "big") + packed


def _padded(parts: list[bytes], used: int, payload_bytes: int) -> bytes:
    return b"".join(parts) + bytes(payload_bytes - used)


def relay_message_overhead_bytes(message: Frame) -> int:
    """Bytes a relay message takes in a payload beyond its own data (length prefix included)."""
    return _RELAY_LENGTH_BYTES + len(_pack(_frame_to_list(message)))


# Documents: JSON-like values carried on streams (requests, response chunks).
DOCUMENT_BYTES_MAX = 8 * 1024 * 1024


def encode_document(document: Any) -> bytes:
    data = _pack(document)
    if len(data) > DOCUMENT_BYTES_MAX:
        raise LocalProtocolError(f"document of {len(data)} bytes exceeds {DOCUMENT_BYTES_MAX}")
    return data


def decode_document(data: bytes) -> Any:
    """A JSON-like value (maps with string keys, lists, scalars); RemoteProtocolError otherwise.

    Every limit is checked on the encoded bytes before msgpack builds anything: the size here, then the
    nesting depth, the value and container counts and the map keys (tp_net.protocol.document_scan)."""
    if len(data) > DOCUMENT_BYTES_MAX:
        raise RemoteProtocolError(f"document of {len(data)} bytes exceeds {DOCUMENT_BYTES_MAX}")
    scan_document(data)
    # Nothing inside can be longer than the input: the input length bounds every header.
    size = len(data)
    return _limited_unpack(data, "document", bins=size, strs=size, arrays=size, maps=size)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(field.name for field in dataclasses.fields(cls))
    return names


def _frame_to_list(frame: Frame) -> list[Any]:
    # Field names cached per class: dataclasses.fields() per frame was a visible share of a relay's CPU.
    return [frame.TAG, *[getattr(frame, name) for name in _field_names(type(frame))]]


def _list_to_frame(item: Any, registry: dict[int, _FrameSpec]) -> Frame:
    if not isinstance(item, list) or not item:
        raise RemoteProtocolError("a frame must be a non-empty array")
    tag, *values = item
    spec = registry.get(tag) if type(tag) is int else None
    if spec is None:
        raise RemoteProtocolError(f"unknown frame tag {tag!r:.20}")
    if len(values) != len(spec.field_types):
        raise RemoteProtocolError(
            f"{spec.cls.__name__} needs {len(spec.field_types)} fields, got {len(values)}"
        )
    for position, (value, accepted) in enumerate(zip(values, spec.field_types, strict=True)):
        # bool is a subclass of int; an int field must not accept True.
        if type(value) not in accepted:
            raise RemoteProtocolError(f"{spec.cls.__name__} field {position} has the wrong type")
    frame = spec.cls(*values)
    frame.check()
    return frame


def _limited_unpack(data: bytes, what: str, *, bins: int, strs: int, arrays: int, maps: int) -> Any:
    """msgpack.unpackb refusing every header above the limits before allocating for it; any failure is a
    RemoteProtocolError."""
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_bin_len=bins,
            max_str_len=strs,
            max_array_len=arrays,
            max_map_len=maps,
            max_ext_len=0,
            ext_hook=_refuse_ext,  # max_ext_len=0 still lets a zero-length ext through
        )
    except Exception as exc:  # msgpack raises a zoo of types for bad input; all mean "malformed"
        raise RemoteProtocolError(f"malformed {what} ({exc.__class__.__name__})") from exc


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError("msgpack ext types are not part of the format")


def _pack(obj: Any) -> bytes:
    try:
        data: bytes = msgpack.packb(obj, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode frame: {exc}") from exc
    return data


def _unpack(data: bytes) -> Any:
    if len(data) > BATCH_BYTES_MAX:
        raise RemoteProtocolError(f"encoded frames of {len(data)} bytes exceed {BATCH_BYTES_MAX}")
    obj = _limited_unpack(
        data, "msgpack", bins=BIN_BYTES_MAX, strs=STR_BYTES_MAX, arrays=FRAMES_PER_BATCH_MAX, maps=0
    )
    _check_depth(obj)
    return obj


def _check_depth(obj: Any) -> None:
    """Batches nest at most two deep (batch -> frame -> scalar); anything deeper is refused."""
    if isinstance(obj, list):
        for item in obj:
            if isinstance(item, list):
                if any(not isinstance(value, _SCALARS) for value in item):
                    raise RemoteProtocolError("frames may not contain containers")
            elif not isinstance(item, _SCALARS):
                raise RemoteProtocolError("unexpected value in a batch")
    elif not isinstance(obj, _SCALARS):
        raise RemoteProtocolError("unexpected msgpack value")
