"""Adversary sweep over measured weights: compromise rate against the adversary's *measured* share.

For each adversary fraction f, one operator runs relays forwarding f of the network's measured relay
bandwidth and a GPU node generating f of its measured tokens/s, and behaves as `attack` says:

- "honest": declares what it has (the baseline: compromise near f * f);
- "inflation": declares 10^7 KB/s per relay and 1,024 slots (the issue's attack: near the honest curve);
- "refuse-and-read": its node refuses 3 of 4 requests as overloaded (reading them), so it loses its weight.

Three authorities measure every relay and node with the real `MeasurementScheduler` against the world's
true rates, the document weights come from the real `document_weights`, and each request is a fresh client
choosing guards, node and path with the real path selection. "Compromised" means one operator holds the
guard and the node. Pure and seeded: no network, no signatures (the weights are what is under test).

    python -m simulations.weight_sweep
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from tp_net.protocol.bandwidth_weights import (
    MeasurementScheduler,
    Outcome,
    Sample,
    TargetKind,
    document_weights,
    predicted_share,
)
from tp_net.protocol.descriptors import ModelOffer, NodeDescriptor, RelayDescriptor
from tp_net.protocol.path_selection import choose_guards, choose_node, choose_path

ATTACKS = ("honest", "inflation", "refuse-and-read")
FRACTIONS = (0.05, 0.1, 0.2, 0.3)
HONEST_RELAYS = 50
HONEST_NODES = 10
ATTACKER_RELAYS = 2
RELAY_KBPS = 1_000.0
NODE_TOKENS_PER_S = 20.0
REFUSED_SHARE = 0.75
AUTHORITIES = 3
THRESHOLD = 2
PERIOD_S = 3_600
MEASURING_PERIODS = 4
REQUESTS = 2_000
MODEL = "sweep-model"


@dataclass(frozen=True)
class SweepPoint:
    attack: str
    fraction: float  # the adversary's share of the true (measurable) capacity
    measured_fraction_relays: float  # its share of the document's relay weight
    measured_fraction_nodes: float
    predicted: float  # measured_fraction_relays * measured_fraction_nodes
    compromise_rate: float


def _id(kind: str, number: int) -> bytes:
    return hashlib.sha256(f"{kind} {number}".encode()).digest()


def _relay(number: int, capacity: int) -> RelayDescriptor:
    address = f"ws://{(number % 200) + 20}.{number // 200}.0.1:9000/"  # one /16 per relay
    return RelayDescriptor(_id("relay", number), address, (bytes(32),), capacity, "", "1", 0, 10**10)


def _node(number: int, home: bytes, slots: int) -> NodeDescriptor:
    offer = ModelOffer(MODEL, bytes(32), 1, "Q4_K_M", 2048, slots, 0)
    return NodeDescriptor(_id("node", number), (bytes(32),), (home,), (offer,), "1", 0, 10**10)


def sweep_point(attack: str, fraction: float, seed: int = 1, requests: int = REQUESTS) -> SweepPoint:
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; one of {ATTACKS}")
    rng = random.Random(seed)
    inflated = attack == "inflation"
    bad_relay_kbps = fraction * HONEST_RELAYS * RELAY_KBPS / ((1 - fraction) * ATTACKER_RELAYS)
    bad_node_tps = fraction * HONEST_NODES * NODE_TOKENS_PER_S / (1 - fraction)
    relays = [_relay(n, int(RELAY_KBPS)) for n in range(HONEST_RELAYS)]
    bad_relays = [
        _relay(HONEST_RELAYS + n, 10**7 if inflated else max(1, round(bad_relay_kbps)))
        for n in range(ATTACKER_RELAYS)
    ]
    nodes = [_node(n, relays[n].node_id, 4) for n in range(HONEST_NODES)]
    bad_node = _node(HONEST_NODES, relays[-1].node_id, 1024 if inflated else 4)
    rates = {r.node_id: RELAY_KBPS for r in relays}
    rates.update((r.node_id, bad_relay_kbps) for r in bad_relays)
    rates.update((n.node_id, NODE_TOKENS_PER_S) for n in nodes)
    rates[bad_node.node_id] = bad_node_tps
    refuses = {bad_node.node_id: REFUSED_SHARE if attack == "refuse-and-read" else 0.0}
    all_relays, all_nodes = [*relays, *bad_relays], [*nodes, bad_node]
    votes = []
    for _ in range(AUTHORITIES):
        scheduler = MeasurementScheduler(PERIOD_S, random.Random(rng.random()))
        scheduler.set_targets([r.node_id for r in all_relays], [n.node_id for n in all_nodes])
        noise = random.Random(rng.random())
        for second in range(MEASURING_PERIODS * PERIOD_S):
            for probe in scheduler.due(float(second)):
                if probe.kind is TargetKind.NODE and noise.random() < refuses.get(probe.node_id, 0.0):
                    scheduler.record(probe.node_id, Sample(Outcome.OVERLOADED))
                else:
                    rate = rates[probe.node_id] * noise.uniform(0.9, 1.1)
                    scheduler.record(probe.node_id, Sample(Outcome.ANSWERED, rate))
        votes.append(tuple(sorted(scheduler.weights().items())))
    weights = dict(document_weights(votes, [*all_relays, *all_nodes], THRESHOLD))
    attacker = {r.node_id for r in bad_relays} | {bad_node.node_id}
    relay_ids, node_ids = [r.node_id for r in all_relays], [n.node_id for n in all_nodes]
    f_relays = predicted_share(weights, relay_ids, attacker)
    f_nodes = predicted_share(weights, node_ids, attacker)
    compromised = 0
    for _ in range(requests):
        guards = choose_guards(all_relays, rng, weights=weights)
        node = choose_node(all_nodes, MODEL, rng, weights=weights)
        assert node is not None
        path = choose_path(all_relays, node, guards, rng, weights=weights)
        compromised += path[0].node_id in attacker and node.node_id in attacker
    return SweepPoint(attack, fraction, f_relays, f_nodes, f_relays * f_nodes, compromised / requests)


def sweep(fractions: tuple[float, ...] = FRACTIONS, seed: int = 1) -> list[SweepPoint]:
    return [sweep_point(attack, f, seed) for attack in ATTACKS for f in fractions]


def main() -> None:
    print("attack            f     measured(relays, nodes)  f_r*f_n   compromised")
    for p in sweep():
        measured = f"{p.measured_fraction_relays:.3f}, {p.measured_fraction_nodes:.3f}"
        print(
            f"{p.attack:16s}  {p.fraction:.2f}  {measured}"
            f"             {p.predicted:.4f}    {p.compromise_rate:.4f}"
        )


if __name__ == "__main__":
    main()
