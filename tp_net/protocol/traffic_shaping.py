"""Traffic-analysis defences (docs/PROTOCOL.md section "Traffic shape"), sans-IO.

Encryption hides what a cell says, not how many cells a conversation makes or when each leaves. These are
the rules that make an inference response's shape depend little on its content:

- cadence: the node releases a response on a fixed tick of RESPONSE_TICK_S, counted from the moment the
  request was decoded; every tick carries everything produced since the last one (tokens share cells), and
  a tick with nothing to send carries one dummy message filling a cell (`{"pad": ...}`, which the client
  drops), so the node's side of a circuit is a steady stream of at least one cell per tick whatever the
  engine's prefill time and token timing, and the client's SENDMEs keep a steady beat too;
- response padding: after the last real cell the node goes on sending one dummy cell per tick until the
  response's cells reach the next length bucket (RESPONSE_BUCKET_CELLS_MIN, then doubling), so the number
  of cells and the duration reveal only the bucket;
- request padding: the client pads the request document to the next size bucket (REQUEST_BUCKET_BYTES_MIN,
  then doubling) with a `pad` field the node ignores.

The stream's END goes right after the real data, so the client is done at the real end and the padding that
follows costs it no time. That padding is DROP relay messages from the node; the client answers them with
DROPs where data would have drawn SENDMEs (drop_echoes). Every dummy is inside all the onion layers: relays
cannot tell it from data.

- cover stream (optional, off by default): on an idle pooled circuit the client sends DROP cells at random
  (Poisson) times at `CoverStream.rate_cells_per_s`, so the link is not silent between conversations. It
  cannot hide a conversation's start: the request burst (REQUEST_BUCKET_CELLS_MIN cells at once) and the
  node's tick stream that follows stand out from a low-rate cover (docs/BENCHMARKS.md, "Cover stream").
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from tp_net.protocol.cells import RELAY_DATA_BYTES_MAX
from tp_net.protocol.circuit_hop import DROP_CELLS_PER_CIRCUIT_BURST, DROP_CELLS_PER_CIRCUIT_RATE_PER_S
from tp_net.protocol.inference_contract import PAD_FIELD
from tp_net.protocol.messages import REQUEST_BYTES_MAX, encode_message, encode_request
from tp_net.protocol.rate_limits import TokenBucket
from tp_net.protocol.streams import CIRCUIT_SENDME_CELLS, STREAM_SENDME_CELLS

RESPONSE_TICK_S = 0.1
RESPONSE_BUCKET_CELLS_MIN = 128  # 12.8 s of cadence: most responses share one bucket
REQUEST_BUCKET_CELLS_MIN = 4
# The cover stream's share of the DROPs the node allows a circuit (DROP_CELLS_PER_CIRCUIT_RATE_PER_S, burst
# DROP_CELLS_PER_CIRCUIT_BURST): half is the drop echoes' (circuit_client), one a minute the pool's keepalive,
# a quarter this; together 0.77 cells/s and a burst of 25 of the node's 1/s and 32.
COVER_CELLS_PER_S_MAX = DROP_CELLS_PER_CIRCUIT_RATE_PER_S / 4
COVER_BURST_CELLS = DROP_CELLS_PER_CIRCUIT_BURST // 4


@dataclass(frozen=True, kw_only=True)
class ResponseShaping:
    """How a node shapes its responses. `tick_s=None`: no cadence (each message leaves as it is made), and
    then no padding either (padding rides on the ticks). `first_at_once`: the first real message leaves as
    soon as it is made, not on the next tick, and the ticks are counted from it (a tick's wait off the time
    to first token; what it reveals is in docs/BENCHMARKS.md, "Traffic analysis")."""

    tick_s: float | None = RESPONSE_TICK_S
    pad_to_bucket: bool = True
    first_at_once: bool = False


RESPONSE_SHAPING_DEFAULT = ResponseShaping()
RESPONSE_SHAPING_OFF = ResponseShaping(tick_s=None, pad_to_bucket=False)


def bucket(count: int, minimum: int) -> int:
    """The smallest of minimum, 2 * minimum, 4 * minimum, ... that holds `count`."""
    size = minimum
    while size < count:
        size *= 2
    return size


def cells_for(data_bytes: int) -> int:
    return math.ceil(data_bytes / RELAY_DATA_BYTES_MAX)


@dataclass(frozen=True)
class Tick:
    """What one tick sends: `data` (may be empty), then `dummy_cells` DROP cells; `end_stream`: the real
    response is complete after this data (send END now)."""

    data: bytes
    dummy_cells: int
    end_stream: bool


class ResponseCadence:
    """One response's schedule: feed it the encoded messages as they are made, call `tick` every tick_s."""

    def __init__(self, shaping: ResponseShaping) -> None:
        self._pad = shaping.pad_to_bucket
        self._first_at_once = shaping.first_at_once
        self._real_sent = False  # a tick carried real data
        self._buffer = bytearray()
        self._finished = False
        self._ended = False
        self.cells_sent = 0  # data, dummy and padding cells so far
        self._target_cells: int | None = None

    def add(self, data: bytes) -> None:
        self._buffer += data

    def finish(self) -> None:
        """The engine made its last message."""
        self._finished = True

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    @property
    def tick_now(self) -> bool:
        """Tick at once, not on the cadence, and count the next ticks from now: `first_at_once` and the
        first real data is waiting."""
        return self._first_at_once and not self._real_sent and bool(self._buffer)

    @property
    def done(self) -> bool:
        """Nothing more to send: the real response ended and the padding reached its bucket."""
        return self._ended and (self._target_cells is None or self.cells_sent >= self._target_cells)

    def tick(self) -> Tick:
        if self._ended:
            if self.done:
                return _IDLE
            self.cells_sent += 1
            return Tick(b"", 1, end_stream=False)
        data = bytes(self._buffer) or (b"" if self._finished else PAD_MESSAGE)
        self._real_sent = self._real_sent or bool(self._buffer)
        self._buffer.clear()
        self.cells_sent += cells_for(len(data))
        if self._finished:
            self._ended = True
            if self._pad:
                self._target_cells = bucket(self.cells_sent, RESPONSE_BUCKET_CELLS_MIN)
        return Tick(data, 0, end_stream=self._ended)


@dataclass(frozen=True, kw_only=True)
class CoverStream:
    """The optional cover stream on idle pooled circuits: DROPs from the client at a mean of
    `rate_cells_per_s` (0: off, the default), at most COVER_CELLS_PER_S_MAX."""

    rate_cells_per_s: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate_cells_per_s <= COVER_CELLS_PER_S_MAX:
            raise ValueError(
                f"a cover stream's rate is 0 to {COVER_CELLS_PER_S_MAX} cells/s, not {self.rate_cells_per_s}"
            )


COVER_STREAM_OFF = CoverStream()


class CoverSchedule:
    """One circuit's cover stream: ask `cells_due` on each look at the circuit (the gateway pool's tick). An
    idle circuit gets DROPs at exponential gaps of mean 1 / rate; a circuit carrying a request gets none,
    and its schedule starts again (a fresh gap) when it is idle again. The cells never exceed the cover's
    share of the node's DROP budget (COVER_CELLS_PER_S_MAX, burst COVER_BURST_CELLS): one past it is
    skipped, not sent late."""

    def __init__(self, cover: CoverStream, rng: random.Random) -> None:
        self._rate = cover.rate_cells_per_s
        self._rng = rng
        self._next_at: float | None = None
        self._budget = TokenBucket(COVER_CELLS_PER_S_MAX, COVER_BURST_CELLS)
        self.cells_sent = 0

    def cells_due(self, now: float, *, idle: bool) -> int:
        """DROP cells to send now (`now`: seconds on a monotonic clock)."""
        if self._rate <= 0.0:
            return 0
        if not idle:
            self._next_at = None
            return 0
        if self._next_at is None:
            self._next_at = now + self._rng.expovariate(self._rate)
            return 0
        due = 0
        while self._next_at <= now:
            self._next_at += self._rng.expovariate(self._rate)
            if self._budget.take(now):
                due += 1
        self.cells_sent += due
        return due


def is_pad(document: Any) -> bool:
    """A dummy response message (the client drops it)."""
    return isinstance(document, dict) and document.keys() == {PAD_FIELD}


def drop_echoes(cells_from_node: int) -> int:
    """DROPs a client sends back when the node's `cells_from_node`-th cell on a circuit (data or DROP) is a
    DROP: as many as the SENDMEs a data cell there would have caused (a stream SENDME every
    STREAM_SENDME_CELLS, a circuit SENDME every CIRCUIT_SENDME_CELLS), so the client's side of the circuit
    keeps the same beat after the real response ended."""
    if cells_from_node % CIRCUIT_SENDME_CELLS == 0:
        return 2
    return 1 if cells_from_node % STREAM_SENDME_CELLS == 0 else 0


def _pad_message(size: int) -> bytes:
    """A dummy response message of exactly `size` bytes."""
    filler = size
    while len(message := encode_message({PAD_FIELD: "x" * filler})) > size:
        filler -= 1
    assert len(message) == size
    return message


_IDLE = Tick(b"", 0, end_stream=False)
PAD_MESSAGE = _pad_message(RELAY_DATA_BYTES_MAX)  # fills one cell


def pad_request(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with a `pad` field that makes its request message fill exactly the next bucket of cells
    (REQUEST_BUCKET_CELLS_MIN, then doubling, the last cut to REQUEST_BYTES_MAX); a document too large for
    that last bucket unchanged."""
    padded = {**document, PAD_FIELD: ""}
    size = len(encode_request(padded))
    cells = min(bucket(cells_for(size), REQUEST_BUCKET_CELLS_MIN), REQUEST_BYTES_MAX // RELAY_DATA_BYTES_MAX)
    target = cells * RELAY_DATA_BYTES_MAX  # the last bucket is cut to what a request may be
    if size > target:
        return document
    # The pad string's own length prefix grows by up to 4 bytes as it lengthens: trim until it fits.
    padded[PAD_FIELD] = "x" * (target - size)
    while len(encode_request(padded)) > target:
        padded[PAD_FIELD] = padded[PAD_FIELD][:-1]
    return padded
