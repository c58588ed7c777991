"""Fuzzing the stream layer: any sequence of relay stream messages into a circuit edge
(tp_net.protocol.streams), and any stream bytes into the message reader (tp_net.protocol.messages), give
events or RemoteProtocolError only, with bounded buffers."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tp_crypto.errors import RemoteProtocolError
from tp_net.protocol.cells import RELAY_DATA_BYTES_MAX
from tp_net.protocol.messages import MessageReader, encode_message
from tp_net.protocol.relay_messages import (
    SENDME_DIGEST_BYTES,
    RelayBegin,
    RelayData,
    RelayDrop,
    RelayEnd,
    RelaySendme,
)
from tp_net.protocol.streams import CircuitEdge

EXAMPLES = int(os.environ.get("TP_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MESSAGE_BYTES_MAX = 4096

stream_ids = st.integers(0, 6)
messages = st.one_of(
    st.builds(RelayBegin, stream_ids, st.sampled_from(["inference", "directory", "x"])),
    st.builds(RelayData, stream_ids, st.binary(max_size=64)),
    st.builds(RelayEnd, stream_ids, st.integers(0, 9)),
    st.builds(RelaySendme, stream_ids, st.binary(min_size=SENDME_DIGEST_BYTES, max_size=SENDME_DIGEST_BYTES)),
    st.builds(RelaySendme, stream_ids, st.just(b"")),
    st.just(RelayDrop()),
)


@FUZZ
@given(st.booleans(), st.lists(messages, max_size=60), st.lists(st.integers(0, 6), max_size=5))
def test_any_stream_messages_give_events_or_a_protocol_error(
    accepts: bool, received: list[object], opened: list[int]
) -> None:
    edge = CircuitEdge(accepts_streams=accepts, data_bytes_max=RELAY_DATA_BYTES_MAX)
    for _ in opened:
        if not accepts:
            edge.open_stream("inference")
    try:
        for message in received:
            edge.receive(message)  # type: ignore[arg-type]
            edge.pending_messages()
    except RemoteProtocolError:
        return


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_any_stream_bytes_give_documents_or_a_protocol_error(pieces: list[bytes]) -> None:
    reader = MessageReader(MESSAGE_BYTES_MAX)
    try:
        for piece in pieces:
            reader.feed(piece)
            assert reader.pending_bytes <= MESSAGE_BYTES_MAX + 4 + len(piece)
    except RemoteProtocolError:
        return


documents = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(st.lists(documents, min_size=1, max_size=5), st.data())
def test_messages_split_anywhere_arrive_whole(sent: list[object], data: st.DataObject) -> None:
    stream = b"".join(encode_message(document) for document in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    reader = MessageReader()
    received = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        received += reader.feed(stream[start:end])
    assert received == sent and reader.pending_bytes == 0
