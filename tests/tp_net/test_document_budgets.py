"""Budgets checked on a document's bytes before msgpack builds anything; the stream readers' byte budgets."""

from __future__ import annotations

import contextlib
import tracemalloc
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tp_crypto.errors import LocalProtocolError, RemoteProtocolError
from tp_net.protocol import codec, document_scan
from tp_net.protocol.messages import (
    REQUEST_BYTES_MAX,
    MessageReader,
    RequestReader,
    encode_message,
    encode_request,
)

MIB = 1024 * 1024
KIB_256 = 256 * 1024


def _peak_bytes_of_decoding(data: bytes) -> int:
    tracemalloc.start()
    try:
        codec.decode_document(data)
    except RemoteProtocolError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize(
    "data",
    [
        b"\xdd" + (KIB_256 - 5).to_bytes(4, "big") + b"\x80" * (KIB_256 - 5),  # 256 KiB of empty maps
        b"\xdd" + (KIB_256 - 5).to_bytes(4, "big") + b"\x90" * (KIB_256 - 5),  # ... of empty arrays
        msgpack.packb([-20] * (KIB_256 - 8)),  # ... of uncached ints
        msgpack.packb(
            [[{}, *[-20] * 14]] * (KIB_256 // 17)
        ),  # within the container budget, not the value one
    ],
    ids=["maps", "arrays", "ints", "mixed"],
)
def test_a_document_of_tiny_values_is_refused_before_it_is_built(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="holds more than"):
        codec.decode_document(data)
    assert _peak_bytes_of_decoding(data) < len(data)  # nothing but the scan ran


def test_a_document_of_small_maps_is_refused_by_the_container_budget_alone() -> None:
    data = msgpack.packb([{"abcdefg": 1}] * (KIB_256 // 10))  # 10 bytes and 3 values per map
    assert len(data) // 3 < document_scan.document_values_max(len(data))
    with pytest.raises(RemoteProtocolError, match="maps and arrays"):
        codec.decode_document(data)
    assert _peak_bytes_of_decoding(data) < len(data)


def test_what_a_document_may_hold_grows_with_its_size() -> None:
    assert document_scan.document_values_max(0) == document_scan.DOCUMENT_VALUES_FREE
    assert (
        document_scan.document_values_max(MIB)
        == document_scan.DOCUMENT_VALUES_FREE + MIB // document_scan.DOCUMENT_BYTES_PER_VALUE_MIN
    )
    assert document_scan.document_containers_max(MIB) == (
        document_scan.DOCUMENT_CONTAINERS_FREE + MIB // document_scan.DOCUMENT_BYTES_PER_CONTAINER_MIN
    )


def test_at_the_budget_a_document_decodes_and_one_more_value_is_refused() -> None:
    # An array16 of n small ints is 3 + n bytes and n + 1 values: 2049 is the most that fit.
    fits = [1] * 2049
    assert len(fits) + 1 == document_scan.document_values_max(3 + len(fits))
    assert codec.decode_document(msgpack.packb(fits)) == fits
    with pytest.raises(RemoteProtocolError, match="values"):
        codec.decode_document(msgpack.packb([*fits, 1]))


HONEST_DOCUMENTS: list[Any] = [
    {"messages": [{"role": "user", "content": "hi"}] * 1024, "max_tokens": 24},
    {"kind": "completion", "prompt": "x" * MIB},
    {"text": "a"},
    {"embedding": [0.25] * 4096, "index": 3},
    {
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "x",
                "schema": {
                    "type": "object",
                    "properties": {f"f{i}": {"type": "string"} for i in range(2000)},
                },
            },
        }
    },
]


@pytest.mark.parametrize("document", HONEST_DOCUMENTS, ids=["chat", "prompt", "chunk", "embedding", "schema"])
def test_honest_documents_fit_their_budgets(document: Any) -> None:
    assert codec.decode_document(codec.encode_document(document)) == document


def test_nesting_is_refused_past_the_depth_limit_before_decoding() -> None:
    deepest: Any = 0
    for _ in range(document_scan.DOCUMENT_DEPTH_MAX - 1):
        deepest = [deepest]
    assert codec.decode_document(msgpack.packb(deepest)) == deepest
    with pytest.raises(RemoteProtocolError, match="deeper"):
        codec.decode_document(msgpack.packb([deepest]))


@pytest.mark.parametrize(
    "data",
    [msgpack.packb({1: "a"}), msgpack.packb({b"k": 1}), msgpack.packb({"a": {2: 3}})],
)
def test_map_keys_must_be_strings(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="keys must be strings"):
        codec.decode_document(data)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x92\x01", b"\x01\x02", b"\xc1", b"\xd4\x01\x00", b"\xdc\xff\xff\x01", b"\xa5ab"],
    ids=["empty", "short-array", "trailing", "unused-type", "ext", "long-array", "short-str"],
)
def test_malformed_documents_are_refused(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="malformed"):
        codec.decode_document(data)


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=8) | st.dictionaries(st.text(), children, max_size=8),
    max_leaves=40,
)


@given(json_like)
def test_the_scan_agrees_with_msgpack_on_what_it_accepts(document: Any) -> None:
    data = msgpack.packb(document, use_bin_type=True)
    try:
        decoded = codec.decode_document(data)
    except RemoteProtocolError as exc:
        assert "holds more than" in str(exc) or "deeper" in str(exc)
    else:
        assert decoded == document


@given(st.binary(max_size=64))
def test_any_bytes_decode_or_raise_a_remote_protocol_error(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        codec.decode_document(data)


# --- the stream readers ---------------------------------------------------------------------------


def test_a_request_reader_refuses_a_second_message_as_its_first_byte_arrives() -> None:
    reader = RequestReader()
    message = encode_message({"a": 1})
    reader.feed(message)
    with pytest.raises(RemoteProtocolError, match="one message"):
        reader.feed(b"\x00")
    assert reader.buffered_bytes == len(message)
    assert reader.document() == {"a": 1}


def test_a_request_reader_refuses_an_announced_length_over_the_limit_before_keeping_it() -> None:
    reader = RequestReader()
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        reader.feed((REQUEST_BYTES_MAX + 1).to_bytes(4, "big"))
    reader = RequestReader()
    reader.feed(b"\x00\x10")  # half a header: nothing known yet
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        reader.feed(b"\x00\x01" + b"x" * 1000)
    assert reader.buffered_bytes == 2


def test_a_request_reader_never_holds_more_than_one_maximal_message() -> None:
    reader = RequestReader()
    header = REQUEST_BYTES_MAX.to_bytes(4, "big")
    reader.feed(header + b"\xa0" * (REQUEST_BYTES_MAX - 1))
    reader.feed(b"\xa0")
    with pytest.raises(RemoteProtocolError):
        reader.feed(b"\xa0")
    assert reader.buffered_bytes == 4 + REQUEST_BYTES_MAX


def test_a_request_reader_decodes_only_a_whole_message() -> None:
    reader = RequestReader()
    message = encode_message({"prompt": "hello"})
    reader.feed(message[:-1])
    with pytest.raises(RemoteProtocolError, match="incomplete"):
        reader.document()
    reader.feed(message[-1:])
    assert reader.document() == {"prompt": "hello"}


def test_a_request_over_the_limit_is_refused_by_its_sender() -> None:
    with pytest.raises(LocalProtocolError, match="exceeds"):
        encode_request({"prompt": "x" * REQUEST_BYTES_MAX})


def test_a_message_reader_refuses_data_past_its_stream_budget_before_keeping_it() -> None:
    reader = MessageReader(stream_bytes_max=100)
    chunk = encode_message({"text": "x" * 40})
    assert reader.feed(chunk) == [{"text": "x" * 40}]
    with pytest.raises(RemoteProtocolError, match="budget"):
        reader.feed(chunk + chunk)
    assert reader.pending_bytes == 0
