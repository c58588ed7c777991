"""Measured weights: what path selection weighs relays and GPU nodes by, instead of what they declare.

As Tor's bandwidth authorities do, each directory authority measures relays and nodes itself (a trio
measurer, `tp_node/measurer.py`, carries out what `MeasurementScheduler` here decides) and puts one weight per
node id in its vote: a relay's forwarding rate through test circuits (KB/s), a GPU node's tokens/s on real
test requests times the share it answered (a node that refuses most requests as `overloaded` loses weight).
The document carries, per descriptor, the median of the measured votes capped by what the descriptor
declares (`document_weights`); a descriptor fewer than `threshold` authorities measured (a newcomer) gets a
small fixed weight. Relays and nodes are weighed in separate pools, so the units never meet.

Pure: no I/O, randomness from an explicit `random.Random`.
"""

from __future__ import annotations

import enum
import itertools
import random
import statistics
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tp_crypto.errors import RemoteProtocolError
from tp_crypto.identity import NODE_ID_BYTES
from tp_net.protocol.descriptors import Descriptor, RelayDescriptor

Weights = tuple[tuple[bytes, int], ...]  # (node id, weight), sorted by node id, one entry per id

WEIGHT_MIN = 1  # every listed relay or node keeps a chance; also that of an id a document does not weigh
WEIGHT_MAX = 10**7  # as a relay's declared capacity
RELAY_WEIGHT_UNMEASURED_KBPS = 20  # an unmeasured relay, whatever it declares (honest ones measure ~100s)
NODE_WEIGHT_UNMEASURED_TOKENS_PER_S = 1
NODE_TOKENS_PER_S_PER_SLOT_MAX = 1_000  # a node is credited at most this per declared slot (its declared cap)

# Measurement load, per authority: every target at most once per round, never many at once.
MEASUREMENTS_PER_PERIOD_MAX = 256  # test circuits and test requests started per period, all targets together
MEASUREMENTS_IN_FLIGHT_MAX = 4
REMEASURE_INTERVAL_S = 60.0  # a target is probed at most once in this long, however short the period
SAMPLES_KEPT_PER_TARGET = 8  # the weight is of the last this many samples of a target
NODE_ANSWERED_SHARE_MIN = 0.5  # a node that answers less than this share of test requests weighs 0
NODE_PROBE_TOKENS_MAX = 16  # max_tokens of a test request
MEASUREMENT_TIMEOUT_S = 60.0


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise RemoteProtocolError(message)


def encode_weights(weights: Weights) -> list[list[Any]]:
    return [[node_id, weight] for node_id, weight in weights]


def decode_weights(value: Any, count_max: int) -> Weights:
    """Weights off the wire (a vote's or a document's): at most `count_max` (one per descriptor the vote or
    document may carry), typed, sorted, one per id."""
    _require(isinstance(value, list), "weights are not a list")
    _require(len(value) <= count_max, f"over {count_max} weights")
    pairs: list[tuple[bytes, int]] = []
    for item in value:
        _require(isinstance(item, list) and len(item) == 2, "a weight is not a pair")
        node_id, weight = item
        _require(isinstance(node_id, bytes) and len(node_id) == NODE_ID_BYTES, "weight of a bad node id")
        _require(
            isinstance(weight, int) and not isinstance(weight, bool) and 0 <= weight <= WEIGHT_MAX,
            f"weight out of range 0..{WEIGHT_MAX}",
        )
        pairs.append((node_id, weight))
    _require(all(a[0] < b[0] for a, b in itertools.pairwise(pairs)), "weights not sorted by id")
    return tuple(pairs)


def as_weights(measured: Mapping[bytes, int]) -> Weights:
    """A mapping of measured weights in wire order, each clamped to 0..WEIGHT_MAX."""
    return tuple((node_id, max(0, min(WEIGHT_MAX, measured[node_id]))) for node_id in sorted(measured))


# --- the document's weights ---------------------------------------------------------------------------


def declared_cap(descriptor: Descriptor) -> int:
    """The most a descriptor may weigh: a relay's declared capacity, a node's declared slots (its largest
    offer) times NODE_TOKENS_PER_S_PER_SLOT_MAX."""
    if isinstance(descriptor, RelayDescriptor):
        return descriptor.capacity
    slots = max(offer.max_concurrent for offer in descriptor.models)
    return slots * NODE_TOKENS_PER_S_PER_SLOT_MAX


def unmeasured_weight(descriptor: Descriptor) -> int:
    if isinstance(descriptor, RelayDescriptor):
        return RELAY_WEIGHT_UNMEASURED_KBPS
    return NODE_WEIGHT_UNMEASURED_TOKENS_PER_S


def document_weights(
    measured_votes: Iterable[Weights], descriptors: Iterable[Descriptor], threshold: int
) -> Weights:
    """One weight per descriptor: the (low) median of the votes that measured it, when at least `threshold`
    did, else the unmeasured weight; capped by what it declares; at least WEIGHT_MIN.

    With k of n honest authorities measuring, up to k - 1 lying ones cannot move the median past an honest
    value (k >= n/2 + 1); the cap stops a measurement that overshoots what the operator offers."""
    votes = [dict(weights) for weights in measured_votes]
    result: list[tuple[bytes, int]] = []
    for descriptor in sorted(descriptors, key=lambda d: d.node_id):
        values = [vote[descriptor.node_id] for vote in votes if descriptor.node_id in vote]
        weight = statistics.median_low(values) if len(values) >= threshold else unmeasured_weight(descriptor)
        result.append((descriptor.node_id, max(WEIGHT_MIN, min(weight, declared_cap(descriptor)))))
    return tuple(result)


def weight_of(weights: Mapping[bytes, int], node_id: bytes) -> int:
    return weights.get(node_id, WEIGHT_MIN)


# --- measuring (sans-IO: the authority's trio measurer carries out these decisions) ---------------------


class Outcome(enum.Enum):
    ANSWERED = "answered"  # a relay forwarded the probe bytes; a node streamed its tokens
    OVERLOADED = "overloaded"  # a node refused the test request as overloaded
    FAILED = "failed"  # circuit broke, timed out, or any other error


class TargetKind(enum.Enum):
    RELAY = "relay"
    NODE = "node"


@dataclass(frozen=True)
class Probe:
    """One measurement to make: a test circuit through a relay, or a test request to a node."""

    node_id: bytes
    kind: TargetKind


@dataclass(frozen=True)
class Sample:
    outcome: Outcome
    rate: float = 0.0  # relays: KB/s of probe bytes; nodes: tokens/s; only counted when ANSWERED


@dataclass
class _Target:
    kind: TargetKind
    samples: deque[Sample]
    last_started: float = float("-inf")


class MeasurementScheduler:
    """Which relays and nodes to measure next, and the weight each has earned.

    Targets are the relays and nodes of the authority's current view (`set_targets`). `due(now)` hands out
    probes least recently measured first (never measured first, ties in a seeded random order), at most
    MEASUREMENTS_IN_FLIGHT_MAX at a time, MEASUREMENTS_PER_PERIOD_MAX per period and one per target per
    REMEASURE_INTERVAL_S, whatever the number of targets: a flood of descriptors slows the measuring of
    newcomers down, never the authority.
    """

    def __init__(self, period_s: int, rng: random.Random) -> None:
        self._period_s = period_s
        self._rng = rng
        self._targets: dict[bytes, _Target] = {}
        self._in_flight: set[bytes] = set()
        self._budget_period = -1
        self._started_this_period = 0

    def set_targets(self, relays: Iterable[bytes], nodes: Iterable[bytes]) -> None:
        wanted = {node_id: TargetKind.RELAY for node_id in relays}
        wanted.update((node_id, TargetKind.NODE) for node_id in nodes)
        kept = {k: t for k, t in self._targets.items() if wanted.get(k) is t.kind}
        for node_id, kind in wanted.items():
            kept.setdefault(node_id, _Target(kind, deque(maxlen=SAMPLES_KEPT_PER_TARGET)))
        self._targets = kept
        self._in_flight &= set(kept)

    def due(self, now: float) -> list[Probe]:
        """The probes to start now (each must be answered by `record`)."""
        period = int(now) // self._period_s
        if period != self._budget_period:
            self._budget_period, self._started_this_period = period, 0
        room = min(
            MEASUREMENTS_IN_FLIGHT_MAX - len(self._in_flight),
            MEASUREMENTS_PER_PERIOD_MAX - self._started_this_period,
        )
        if room <= 0:
            return []
        idle = [
            k
            for k, target in self._targets.items()
            if k not in self._in_flight and now >= target.last_started + REMEASURE_INTERVAL_S
        ]
        self._rng.shuffle(idle)
        idle.sort(key=lambda k: self._targets[k].last_started)  # stable: ties stay shuffled
        probes = [Probe(k, self._targets[k].kind) for k in idle[:room]]
        for probe in probes:
            self._in_flight.add(probe.node_id)
            self._targets[probe.node_id].last_started = now
        self._started_this_period += len(probes)
        return probes

    def record(self, node_id: bytes, sample: Sample) -> None:
        self._in_flight.discard(node_id)
        target = self._targets.get(node_id)
        if target is not None:  # a target dropped meanwhile is not measured any more
            target.samples.append(sample)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def weights(self) -> dict[bytes, int]:
        """The weight each measured target has earned (what the authority votes); unmeasured ones are absent.

        A relay: the median rate of its answered probes. A node: the median tokens/s of its answered requests
        times the share of requests it answered, squared; a node that refuses (or drops) most of them, below
        NODE_ANSWERED_SHARE_MIN, weighs 0, as does any target that answered none (the document raises 0 to
        WEIGHT_MIN)."""
        result: dict[bytes, int] = {}
        for node_id, target in self._targets.items():
            if not target.samples:
                continue
            rates = [s.rate for s in target.samples if s.outcome is Outcome.ANSWERED]
            if not rates:
                result[node_id] = 0
                continue
            rate = statistics.median(rates)
            answered = len(rates) / len(target.samples)
            if target.kind is TargetKind.NODE:
                rate = rate * answered**2 if answered >= NODE_ANSWERED_SHARE_MIN else 0.0
            result[node_id] = max(0, min(WEIGHT_MAX, round(rate)))
        return result


def predicted_share(weights: Mapping[bytes, int], ids: Sequence[bytes], of: Iterable[bytes]) -> float:
    """The share of the total weight of `ids` that the ids in `of` hold (what an attacker's measured share
    predicts it is chosen with)."""
    total = sum(weight_of(weights, node_id) for node_id in ids)
    chosen = set(of)
    return sum(weight_of(weights, node_id) for node_id in ids if node_id in chosen) / total if total else 0.0
