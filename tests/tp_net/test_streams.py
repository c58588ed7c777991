"""Streams and flow control at a circuit's edges (CircuitEdge), two edges wired back to back."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

import pytest

from tp_crypto.errors import LocalProtocolError, RemoteProtocolError
from tp_net.protocol import streams
from tp_net.protocol.cells import RELAY_DATA_BYTES_MAX
from tp_net.protocol.frames import Frame
from tp_net.protocol.relay_messages import (
    CIRCUIT_STREAM_ID,
    SENDME_DIGEST_BYTES,
    STREAM_ID_MAX,
    RelayBegin,
    RelayData,
    RelayDrop,
    RelayEnd,
    RelayExtend,
    RelaySendme,
)
from tp_net.protocol.streams import (
    CIRCUIT_SENDME_CELLS,
    CIRCUIT_WINDOW_CELLS,
    STREAM_SENDME_CELLS,
    STREAM_WINDOW_CELLS,
    CircuitEdge,
    EndReason,
    StreamData,
    StreamEnded,
    StreamEvent,
    StreamOpened,
)


@dataclass
class Side:
    edge: CircuitEdge
    auto_consume: bool = True
    events: list[StreamEvent] = field(default_factory=list)
    sent: list[Frame] = field(default_factory=list)

    def data(self, stream_id: int) -> bytes:
        return b"".join(e.data for e in self.events if isinstance(e, StreamData) and e.stream_id == stream_id)

    def ends(self, stream_id: int) -> list[int]:
        return [e.reason for e in self.events if isinstance(e, StreamEnded) and e.stream_id == stream_id]

    def data_sent(self, stream_id: int | None = None) -> int:
        return sum(1 for m in self.sent if isinstance(m, RelayData) and stream_id in (None, m.stream_id))


def pair(data_bytes_max: int = RELAY_DATA_BYTES_MAX) -> tuple[Side, Side]:
    """(client, node): the node accepts streams."""
    return (
        Side(CircuitEdge(accepts_streams=False, data_bytes_max=data_bytes_max)),
        Side(CircuitEdge(accepts_streams=True, data_bytes_max=data_bytes_max)),
    )


def pump(a: Side, b: Side, *, max_rounds: int = 100_000) -> None:
    """Exchange pending messages until neither side has anything to send."""
    for _ in range(max_rounds):
        moved = False
        for src, dst in ((a, b), (b, a)):
            for message in src.edge.pending_messages():
                moved = True
                src.sent.append(message)
                deliver(dst, message)
        if not moved:
            return
    raise AssertionError("edges never went quiet")


def deliver(side: Side, message: Frame) -> None:
    events = side.edge.receive(message)
    side.events += events
    if side.auto_consume:
        for event in events:
            if isinstance(event, StreamData):
                side.edge.consumed(event.stream_id, 1)


# --- streams --------------------------------------------------------------------------------------


def test_open_send_end_both_directions() -> None:
    client, node = pair()
    sid = client.edge.open_stream("inference")
    client.edge.send(sid, b"prompt")
    client.edge.end(sid)
    pump(client, node)
    assert node.events == [StreamOpened(sid, "inference"), StreamData(sid, b"prompt"), StreamEnded(sid, 0)]
    assert client.edge.is_open(sid) and node.edge.is_open(sid)  # half closed
    node.edge.send(sid, b"answer")
    node.edge.end(sid, EndReason.DONE)
    pump(client, node)
    assert client.events == [StreamData(sid, b"answer"), StreamEnded(sid, EndReason.DONE)]
    assert not client.edge.is_open(sid) and not node.edge.is_open(sid)
    assert client.edge.stream_count == node.edge.stream_count == 0


def test_the_side_that_was_ended_can_keep_sending() -> None:
    client, node = pair()
    sid = client.edge.open_stream("inference")
    client.edge.end(sid)
    pump(client, node)
    for chunk in (b"a", b"b", b"c"):
        node.edge.send(sid, chunk)
        pump(client, node)
    assert client.data(sid) == b"abc"
    with pytest.raises(LocalProtocolError):
        client.edge.send(sid, b"more")


@pytest.mark.parametrize("size", [1, RELAY_DATA_BYTES_MAX, RELAY_DATA_BYTES_MAX + 1, 200_000])
def test_large_payloads_fragment_and_reassemble_in_order(size: int) -> None:
    client, node = pair()
    blob = random.Random(size).randbytes(size)
    sid = client.edge.open_stream("inference")
    client.edge.send(sid, blob)
    client.edge.end(sid)
    pump(client, node)
    assert node.data(sid) == blob
    chunks = [m for m in client.sent if isinstance(m, RelayData)]
    assert len(chunks) == -(-size // RELAY_DATA_BYTES_MAX)
    assert all(0 < len(m.data) <= RELAY_DATA_BYTES_MAX for m in chunks)
    node.edge.send(sid, blob[::-1])
    node.edge.end(sid)
    pump(client, node)
    assert client.data(sid) == blob[::-1]


def test_many_streams_interleave_round_robin() -> None:
    client, node = pair(data_bytes_max=10)
    sids = [client.edge.open_stream("inference") for _ in range(20)]
    for sid in sids:
        client.edge.send(sid, bytes([sid]) * 50)
        client.edge.end(sid)
    batch = client.edge.pending_messages()
    order = [m.stream_id for m in batch if isinstance(m, RelayData)]
    assert order[:20] == sids  # one chunk from each stream before any second chunk
    assert order[20:40] == sids
    for message in batch:
        deliver(node, message)
    pump(client, node)
    for sid in sids:
        assert node.data(sid) == bytes([sid]) * 50
        assert node.ends(sid) == [0]
    assert len({e.stream_id for e in node.events if isinstance(e, StreamOpened)}) == 20


def test_stream_ids_are_unique_and_wrap() -> None:
    edge = CircuitEdge(accepts_streams=False, data_bytes_max=100)
    edge._next_stream_id = STREAM_ID_MAX - 1
    ids = [edge.open_stream("s") for _ in range(4)]
    assert ids == [STREAM_ID_MAX - 1, STREAM_ID_MAX, 1, 2]
    edge.end(1, EndReason.CANCELLED)
    edge._next_stream_id = STREAM_ID_MAX
    assert edge.open_stream("s") == 1  # STREAM_ID_MAX is taken, 1 is free again


@pytest.mark.parametrize("aborter", ["client", "node"])
def test_abort_from_either_side(aborter: str) -> None:
    client, node = pair()
    sid = client.edge.open_stream("inference")
    client.edge.send(sid, b"x" * 5000)
    pump(client, node)
    node.edge.send(sid, b"y" * 5000)
    a, b = (client, node) if aborter == "client" else (node, client)
    a.edge.send(sid, b"never sent")
    a.edge.end(sid, EndReason.CANCELLED)
    assert not a.edge.is_open(sid)
    assert a.edge.queued_bytes(sid) == 0
    pump(client, node)
    assert b.ends(sid) == [EndReason.CANCELLED]
    assert not b.edge.is_open(sid)
    assert b"never sent" not in b.data(sid)
    assert client.edge.stream_count == node.edge.stream_count == 0


def test_abort_after_our_end_still_reaches_the_peer() -> None:
    """The usual cancel: the request was sent and ended, the reply is streaming, the user goes away."""
    client, node = pair()
    sid = client.edge.open_stream("inference")
    client.edge.send(sid, b"prompt")
    client.edge.end(sid)
    pump(client, node)
    node.edge.send(sid, b"token ")
    pump(client, node)
    client.edge.end(sid, EndReason.CANCELLED)
    assert not client.edge.is_open(sid)
    pump(client, node)
    assert node.ends(sid) == [EndReason.DONE, EndReason.CANCELLED]
    assert not node.edge.is_open(sid)
    assert node.edge.stream_count == 0


def test_data_in_flight_for_an_aborted_stream_is_dropped_but_counted() -> None:
    client, node = pair()
    sid = client.edge.open_stream("inference")
    pump(client, node)
    node.edge.send(sid, b"z" * (RELAY_DATA_BYTES_MAX * 3))
    in_flight = node.edge.pending_messages()
    client.edge.end(sid, EndReason.CANCELLED)
    for message in in_flight:
        deliver(client, message)
    assert client.data(sid) == b""
    pump(client, node)
    assert node.ends(sid) == [EndReason.CANCELLED]


def test_end_twice_is_harmless_locally() -> None:
    client, node = pair()
    sid = client.edge.open_stream("inference")
    client.edge.end(sid)
    client.edge.end(sid)
    client.edge.end(sid, EndReason.DONE)
    pump(client, node)
    assert node.ends(sid) == [EndReason.DONE]
    assert sum(1 for m in client.sent if isinstance(m, RelayEnd)) == 1


def test_end_of_an_unknown_stream_is_ignored() -> None:
    client, _ = pair()
    client.edge.end(42, EndReason.CANCELLED)
    client.edge.consumed(42, 5)
    assert client.edge.pending_messages() == []
    assert client.edge.queued_bytes(42) == 0


def test_send_on_unknown_stream_is_a_local_error() -> None:
    client, _ = pair()
    with pytest.raises(LocalProtocolError):
        client.edge.send(3, b"x")


def test_end_done_waits_for_queued_data() -> None:
    client, node = pair()
    node.auto_consume = False
    sid = client.edge.open_stream("inference")
    client.edge.send(sid, b"q" * (RELAY_DATA_BYTES_MAX * (STREAM_WINDOW_CELLS + 10)))
    client.edge.end(sid)
    pump(client, node)
    assert node.ends(sid) == []  # the window is shut; END must not overtake the queued data
    assert client.edge.queued_bytes(sid) == RELAY_DATA_BYTES_MAX * 10
    node.edge.consumed(sid, STREAM_WINDOW_CELLS)
    pump(client, node)
    assert node.ends(sid) == [EndReason.DONE]
    assert len(node.data(sid)) == RELAY_DATA_BYTES_MAX * (STREAM_WINDOW_CELLS + 10)


def test_duplicate_end_done_is_a_protocol_error() -> None:
    client, node = pair()
    sid = client.edge.open_stream("inference")
    pump(client, node)
    deliver(node, RelayEnd(sid, EndReason.DONE))
    with pytest.raises(RemoteProtocolError):
        node.edge.receive(RelayEnd(sid, EndReason.DONE))


def test_data_after_end_is_a_protocol_error() -> None:
    client, node = pair()
    sid = client.edge.open_stream("inference")
    client.edge.end(sid)
    pump(client, node)
    with pytest.raises(RemoteProtocolError):
        node.edge.receive(RelayData(sid, b"late"))


def test_data_for_unknown_streams_is_ignored() -> None:
    _, node = pair()
    assert node.edge.receive(RelayData(77, b"x")) == []
    assert node.edge.receive(RelayEnd(77, 0)) == []
    assert node.edge.receive(RelaySendme(77, b"")) == []


def test_begin_rules() -> None:
    client, node = pair()
    with pytest.raises(RemoteProtocolError):
        client.edge.receive(RelayBegin(1, "inference"))  # a client accepts no streams
    assert node.edge.receive(RelayBegin(1, "inference")) == [StreamOpened(1, "inference")]
    with pytest.raises(RemoteProtocolError):
        node.edge.receive(RelayBegin(1, "inference"))  # already open


@pytest.mark.parametrize("service", ["", "s" * 65])
def test_invalid_service_names_are_refused_locally(service: str) -> None:
    client, _ = pair()
    with pytest.raises(LocalProtocolError):
        client.edge.open_stream(service)
    assert client.edge.stream_count == 0


def test_non_stream_messages() -> None:
    client, _ = pair()
    assert client.edge.receive(RelayDrop()) == []
    with pytest.raises(RemoteProtocolError):
        client.edge.receive(RelayExtend(bytes(32), None, b""))


def test_close_all_ends_every_stream() -> None:
    client, _ = pair()
    sids = [client.edge.open_stream("inference") for _ in range(3)]
    client.edge.send(sids[0], b"queued")
    assert client.edge.close_all() == [StreamEnded(s, EndReason.CIRCUIT_CLOSED) for s in sids]
    assert client.edge.stream_count == 0
    assert client.edge.pending_messages() == []


# --- flow control ---------------------------------------------------------------------------------


def test_stream_window_stops_a_stream_whose_reader_does_not_consume() -> None:
    client, node = pair(data_bytes_max=1)
    client.auto_consume = False
    sid = client.edge.open_stream("inference")
    pump(client, node)
    node.edge.send(sid, b"t" * 10_000)
    pump(client, node)
    assert node.data_sent(sid) == STREAM_WINDOW_CELLS
    assert len(client.data(sid)) == STREAM_WINDOW_CELLS
    assert node.edge.queued_bytes(sid) == 10_000 - STREAM_WINDOW_CELLS
    client.edge.consumed(sid, STREAM_SENDME_CELLS - 1)
    pump(client, node)
    assert node.data_sent(sid) == STREAM_WINDOW_CELLS  # not a whole group consumed yet
    client.edge.consumed(sid, 1)
    pump(client, node)
    assert node.data_sent(sid) == STREAM_WINDOW_CELLS + STREAM_SENDME_CELLS


def test_circuit_window_bounds_unacked_cells_across_streams() -> None:
    """The sender never has more than CIRCUIT_WINDOW_CELLS unacknowledged, whatever its streams."""
    client, node = pair(data_bytes_max=1)
    sids = [client.edge.open_stream("inference") for _ in range(4)]
    pump(client, node)
    for sid in sids:
        node.edge.send(sid, b"x" * 1000)
    first = node.edge.pending_messages()
    assert sum(isinstance(m, RelayData) for m in first) == CIRCUIT_WINDOW_CELLS
    assert node.edge.pending_messages() == []  # nothing more until acked
    per_stream = {
        sid: sum(1 for m in first if isinstance(m, RelayData) and m.stream_id == sid) for sid in sids
    }
    assert all(count <= STREAM_WINDOW_CELLS for count in per_stream.values())
    acks = []
    for message in first:
        deliver(client, message)
        acks += [m for m in client.edge.pending_messages() if isinstance(m, RelaySendme)]
    circuit_acks = [a for a in acks if a.stream_id == CIRCUIT_STREAM_ID]
    assert len(circuit_acks) == CIRCUIT_WINDOW_CELLS // CIRCUIT_SENDME_CELLS
    deliver(node, circuit_acks[0])
    assert sum(isinstance(m, RelayData) for m in node.edge.pending_messages()) == CIRCUIT_SENDME_CELLS


@dataclass
class Ledger:
    """What the node has sent and not yet seen acknowledged, counted as the windows count it."""

    circuit: int = 0
    peak: int = 0
    streams: dict[int, int] = field(default_factory=dict)

    def sent(self, message: Frame) -> None:
        if isinstance(message, RelayData):
            self.circuit += 1
            self.streams[message.stream_id] = self.streams.get(message.stream_id, 0) + 1
            self.peak = max(self.peak, self.circuit)
            assert self.circuit <= CIRCUIT_WINDOW_CELLS
            assert self.streams[message.stream_id] <= STREAM_WINDOW_CELLS

    def acked(self, message: Frame) -> None:
        if isinstance(message, RelaySendme) and message.stream_id == CIRCUIT_STREAM_ID:
            self.circuit -= CIRCUIT_SENDME_CELLS
        elif isinstance(message, RelaySendme):
            self.streams[message.stream_id] -= STREAM_SENDME_CELLS


def consume_some(rng: random.Random, client: Side, consumed: dict[int, int]) -> None:
    sid = rng.choice(list(consumed))
    ready = sum(1 for e in client.events if isinstance(e, StreamData) and e.stream_id == sid) - consumed[sid]
    if ready:
        take = rng.randint(1, ready)
        consumed[sid] += take
        client.edge.consumed(sid, take)


def test_in_flight_never_exceeds_the_windows_under_random_scheduling() -> None:
    """Random delivery delays and consumption: count unacked cells at the sender at every step."""
    rng = random.Random(11)
    client, node = pair(data_bytes_max=7)
    client.auto_consume = False
    sids = [client.edge.open_stream("inference") for _ in range(5)]
    pump(client, node)
    for sid in sids:
        node.edge.send(sid, rng.randbytes(7 * 400))
    to_client: deque[Frame] = deque()
    to_node: deque[Frame] = deque()
    ledger = Ledger()
    consumed = dict.fromkeys(sids, 0)
    for _ in range(20_000):
        for message in node.edge.pending_messages():
            ledger.sent(message)
            to_client.append(message)
        to_node.extend(client.edge.pending_messages())
        action = rng.random()
        if action < 0.45:
            for _ in range(min(rng.randint(1, 40), len(to_client))):
                deliver(client, to_client.popleft())
        elif action < 0.75 and to_node:
            message = to_node.popleft()
            ledger.acked(message)
            deliver(node, message)
        else:
            consume_some(rng, client, consumed)
        if all(len(client.data(s)) == 7 * 400 for s in sids):
            break
    assert all(len(client.data(s)) == 7 * 400 for s in sids)
    assert ledger.peak == CIRCUIT_WINDOW_CELLS  # the window was filled, and never overfilled


def test_forged_circuit_sendme_is_a_protocol_error() -> None:
    client, node = pair(data_bytes_max=1)
    sid = client.edge.open_stream("inference")
    pump(client, node)
    node.edge.send(sid, b"x" * CIRCUIT_SENDME_CELLS)
    node.edge.pending_messages()
    with pytest.raises(RemoteProtocolError):
        node.edge.receive(RelaySendme(CIRCUIT_STREAM_ID, b"\x00" * SENDME_DIGEST_BYTES))


def test_circuit_sendme_before_a_whole_group_is_a_protocol_error() -> None:
    client, node = pair(data_bytes_max=1)
    sid = client.edge.open_stream("inference")
    pump(client, node)
    node.edge.send(sid, b"x" * (CIRCUIT_SENDME_CELLS - 1))
    node.edge.pending_messages()
    with pytest.raises(RemoteProtocolError):
        node.edge.receive(RelaySendme(CIRCUIT_STREAM_ID, b"\x00" * SENDME_DIGEST_BYTES))


def test_extra_circuit_sendme_is_a_protocol_error() -> None:
    client, node = pair(data_bytes_max=1)
    sid = client.edge.open_stream("inference")
    pump(client, node)
    node.edge.send(sid, b"x" * CIRCUIT_SENDME_CELLS)
    for message in node.edge.pending_messages():
        deliver(client, message)
    (ack,) = [m for m in client.edge.pending_messages() if isinstance(m, RelaySendme) and m.stream_id == 0]
    node.edge.receive(ack)
    with pytest.raises(RemoteProtocolError):
        node.edge.receive(ack)


def test_sendme_digest_covers_the_data_received() -> None:
    """A reader that did not receive the cells cannot compute the ack of another reader."""
    a_client, a_node = pair(data_bytes_max=1)
    b_client, b_node = pair(data_bytes_max=1)
    for client, node, fill in ((a_client, a_node, b"a"), (b_client, b_node, b"b")):
        sid = client.edge.open_stream("inference")
        pump(client, node)
        node.edge.send(sid, fill * CIRCUIT_SENDME_CELLS)
    for message in a_node.edge.pending_messages():
        deliver(a_client, message)
    b_node.edge.pending_messages()
    (ack,) = [m for m in a_client.edge.pending_messages() if isinstance(m, RelaySendme) and m.stream_id == 0]
    with pytest.raises(RemoteProtocolError):
        b_node.edge.receive(ack)


def test_stream_sendme_beyond_the_window_is_a_protocol_error() -> None:
    client, node = pair()
    sid = client.edge.open_stream("inference")
    pump(client, node)
    with pytest.raises(RemoteProtocolError):
        client.edge.receive(RelaySendme(sid, b""))


def test_peer_exceeding_the_stream_window_is_a_protocol_error() -> None:
    client, node = pair()
    node.auto_consume = False
    sid = client.edge.open_stream("inference")
    pump(client, node)
    for _ in range(STREAM_WINDOW_CELLS):
        node.edge.receive(RelayData(sid, b"x"))
    with pytest.raises(RemoteProtocolError):
        node.edge.receive(RelayData(sid, b"x"))


# --- limits ---------------------------------------------------------------------------------------


def test_streams_per_circuit_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "STREAMS_PER_CIRCUIT_MAX", 3)
    client, node = pair()
    sids = [client.edge.open_stream("inference") for _ in range(3)]
    with pytest.raises(LocalProtocolError):
        client.edge.open_stream("inference")
    pump(client, node)
    assert node.edge.stream_count == 3
    assert node.edge.receive(RelayBegin(99, "inference")) == []
    assert node.edge.pending_messages() == [RelayEnd(99, EndReason.OVERLOADED)]
    assert node.edge.stream_count == 3
    client.edge.end(sids[0], EndReason.CANCELLED)
    pump(client, node)
    assert node.edge.stream_count == 2
    assert node.edge.receive(RelayBegin(99, "inference")) == [StreamOpened(99, "inference")]
