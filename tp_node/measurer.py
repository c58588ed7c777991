"""An authority's measurer (trio): carries out `MeasurementScheduler`'s probes over real circuits.

Decisions (whom to measure, when, how often, what a sample is worth) live in
tp_net/protocol/bandwidth_weights.py; this module only moves bytes and time. Every MEASURE_TICK_S it takes the
relays and nodes of the document the authority serves as targets, starts the probes that are due, each under
MEASUREMENT_TIMEOUT_S, records what came back and hands the weights earned so far to the authority
(`AuthorityCore.record_weights`), whose next vote carries them.

- A GPU node is measured with a real chat request, `NODE_PROBE_TOKENS_MAX` tokens, on a circuit chosen as
  a gateway chooses one ([guard, middle, home relay] by document weight, the authority's own guards): the node
  sees a circuit and a request like any other, so it cannot answer probes and refuse users. `overloaded`
  counts against it; any other failure is a failed sample.
- A relay is measured with a two-hop circuit [relay, helper] (the helper a weighted relay diverse from it)
  that fetches the document from the helper's directory service: the bytes cross the relay.
  The relay sees the link come from an authority's address, as Tor's relays see their bandwidth scanners.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from contextlib import aclosing
from typing import Any, Protocol

import trio

from tp_crypto.identity import short_id
from tp_net.protocol.bandwidth_weights import (
    MEASUREMENT_TIMEOUT_S,
    NODE_PROBE_TOKENS_MAX,
    MeasurementScheduler,
    Outcome,
    Probe,
    Sample,
    TargetKind,
)
from tp_net.protocol.circuit_client import HopInfo
from tp_net.protocol.descriptors import NodeDescriptor, RelayDescriptor
from tp_net.protocol.directory import Directory, DirectoryError, SignedDocument, Trust, verify_document
from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.protocol.path_selection import (
    PathError,
    PathRules,
    choose_guards,
    choose_path,
    circuit_hops,
    diverse,
)
from tp_net.trio.client import ClientLink
from tp_net.trio.directory_client import DIRECTORY_SERVICE
from tp_net.trio.transport import Dialer

log = logging.getLogger(__name__)

MEASURE_TICK_S = 1.0
BYTES_PER_KB = 1024
# Test prompts: ordinary, varied requests (a node that learned one fixed prompt could answer only that one).
PROBE_TOPICS = ("the sea", "a bicycle", "autumn", "a library", "bread", "the moon", "a river", "chess")
PROBE_ASKS = ("Write two sentences about {}.", "Describe {} briefly.", "Tell me one fact about {}.")


class Prober(Protocol):
    async def probe(self, probe: Probe, directory: Directory) -> Sample: ...


async def run_measurer(
    scheduler: MeasurementScheduler,
    current_directory: Callable[[], Directory | None],
    record_weights: Callable[[dict[bytes, int]], None],
    prober: Prober,
    *,
    wall_clock: Callable[[], float] = time.time,
) -> None:
    """Measure forever: the scheduler bounds how many probes run at once and per period."""
    async with trio.open_nursery() as nursery:
        while True:
            directory = current_directory()
            if directory is not None:
                scheduler.set_targets(directory.relays, directory.nodes)
                for probe in scheduler.due(wall_clock()):
                    nursery.start_soon(_measure_one, scheduler, probe, directory, prober, record_weights)
            await trio.sleep(MEASURE_TICK_S)


async def _measure_one(
    scheduler: MeasurementScheduler,
    probe: Probe,
    directory: Directory,
    prober: Prober,
    record_weights: Callable[[dict[bytes, int]], None],
) -> None:
    sample = Sample(Outcome.FAILED)
    with trio.move_on_after(MEASUREMENT_TIMEOUT_S):
        try:
            sample = await prober.probe(probe, directory)
        except Exception as exc:  # the edge: whatever a probe raises (groups too) costs only its sample
            log.info("measuring %s failed: %s", short_id(probe.node_id), exc.__class__.__name__)
    scheduler.record(probe.node_id, sample)
    record_weights(scheduler.weights())


class CircuitProber:
    """Probes over real circuits, dialed with `dialer` (see the module docstring)."""

    def __init__(self, dialer: Dialer, rng: random.Random, rules: PathRules) -> None:
        self._dialer = dialer
        self._rng = rng
        self._rules = rules
        self._guards: list[bytes] = []

    async def probe(self, probe: Probe, directory: Directory) -> Sample:
        if probe.kind is TargetKind.RELAY:
            relay = directory.relays.get(probe.node_id)
            return await self._probe_relay(relay, directory) if relay else Sample(Outcome.FAILED)
        node = directory.nodes.get(probe.node_id)
        return await self._probe_node(node, directory) if node else Sample(Outcome.FAILED)

    async def _probe_relay(self, relay: RelayDescriptor, directory: Directory) -> Sample:
        helpers = [r for r in directory.relays.values() if diverse(r, relay, self._rules)]
        if not helpers:
            return Sample(Outcome.FAILED)
        [helper_id] = choose_guards(helpers, self._rng, count=1, rules=self._rules, weights=directory.weights)
        path = [_hop(relay), _hop(directory.relays[helper_id])]
        received = 0
        async with ClientLink.connect(self._dialer, path[0], rng=self._rng) as link:
            circuit = await link.build_circuit(path)
            started = trio.current_time()
            try:
                async with aclosing(circuit.request(DIRECTORY_SERVICE, {"op": "get"})) as messages:
                    async for message in messages:
                        document = message.get("document") if isinstance(message, dict) else None
                        received += len(document) if isinstance(document, bytes) else 0
            finally:
                circuit.destroy()
            elapsed = max(trio.current_time() - started, 1e-6)
        if not received:
            return Sample(Outcome.FAILED)
        return Sample(Outcome.ANSWERED, received / BYTES_PER_KB / elapsed)

    async def _probe_node(self, node: NodeDescriptor, directory: Directory) -> Sample:
        relays = list(directory.relays.values())
        if not all(guard in directory.relays for guard in self._guards):
            self._guards = []
        if not self._guards:
            self._guards = choose_guards(relays, self._rng, rules=self._rules, weights=directory.weights)
        try:
            path = choose_path(
                relays, node, self._guards, self._rng, rules=self._rules, weights=directory.weights
            )
        except PathError:
            return Sample(Outcome.FAILED)
        document = self._test_request(node)
        pieces = 0
        async with ClientLink.connect(self._dialer, _hop(path[0]), rng=self._rng) as link:
            circuit = await link.build_circuit(circuit_hops(path, node))
            started = trio.current_time()
            try:
                async with aclosing(circuit.request(INFERENCE_SERVICE, document)) as messages:
                    async for message in messages:
                        outcome = _failure(message)
                        if outcome is not None:
                            return Sample(outcome)
                        tokens = _completion_tokens(message)
                        pieces = tokens if tokens is not None else pieces + isinstance(message, dict)
            finally:
                circuit.destroy()
            elapsed = max(trio.current_time() - started, 1e-6)
        return Sample(Outcome.ANSWERED, pieces / elapsed)

    def _test_request(self, node: NodeDescriptor) -> dict[str, Any]:
        model = self._rng.choice(node.models).model_id
        prompt = self._rng.choice(PROBE_ASKS).format(self._rng.choice(PROBE_TOPICS))
        return {
            "kind": "chat",
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": NODE_PROBE_TOKENS_MAX,
        }


def _hop(relay: RelayDescriptor) -> HopInfo:
    return HopInfo(relay.node_id, relay.onion_keys[0], relay.address)


def _failure(message: Any) -> Outcome | None:
    error = message.get("error") if isinstance(message, dict) else None
    if not isinstance(error, dict):
        return None
    return Outcome.OVERLOADED if error.get("code") == "overloaded" else Outcome.FAILED


def _completion_tokens(message: Any) -> int | None:
    """The completion tokens of the final message's usage, when this is it."""
    usage = message.get("usage") if isinstance(message, dict) else None
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None


def served_directory(
    document: Callable[[], SignedDocument | None],
    trust: Trust,
    *,
    wall_clock: Callable[[], float] = time.time,
) -> Callable[[], Directory | None]:
    """The directory of the document an authority serves, verified once per signed document (None while
    there is none): opening every descriptor of a large document each tick would cost more than measuring."""
    last: list[tuple[SignedDocument, Directory | None]] = []

    def current() -> Directory | None:
        signed = document()
        if signed is None:
            return None
        if not last or last[0][0] != signed:
            try:
                directory: Directory | None = verify_document(signed, trust, wall_clock())
            except DirectoryError:
                directory = None
            last[:] = [(signed, directory)]
        return last[0][1]

    return current
