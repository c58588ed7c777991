"""Adversary sweep over measured weights: compromise rate against the adversary's *measured* share, through
the real directory code.

For each adversary fraction f, one operator runs relays forwarding f of the network's measurable relay
bandwidth and a GPU node generating f of its tokens/s, and behaves as `attack` says:

- "honest": declares what it has (the baseline: compromise near f * f);
- "inflation": declares 10^7 KB/s per relay and 1,024 slots (the issue's attack: near the honest curve);
- "refuse-and-read": its node refuses 3 of 4 requests as overloaded (after reading them): it loses its
  weight;
- "sybil-flood": it also uploads `sybils` relay descriptors (declaring 10^7 KB/s) that claim addresses in as
  many /16s, none reachable; then `NEWCOMERS` honest relays join. No Sybil is admitted, every newcomer is;
- "byzantine-authority": one of the three authorities is the operator's. In the first voting period it
  equivocates (a different signed vote to each honest authority), in the second it withholds its vote and
  signature, from the third on it votes garbage weights (10^7 for its operator, the minimum for everyone
  else) and sends a signature over garbage. The two honest authorities sign a document every period, and
  the median of the votes leaves the garbage out.

The authorities are the real `AuthorityCore` (open admission, reachability checked: a relay is admitted when
the link model says its address answers), they exchange real signed votes and signatures over
`VOTING_PERIODS` periods, and the document the last period gives is verified as a client verifies it.
What they vote as measured weights is injected from the link model (not measured over circuits): each honest
authority runs the real `MeasurementScheduler` for `MEASURING_PERIODS` periods against the true rates (with
10 % noise and the refuser's refusals). Each request is then a fresh client choosing guards, node and path
with the real path selection on the document's weights; "compromised" means one operator holds the guard
and the node. Pure and seeded: no network, no clock.

    tp-sim --attack-sweep [--quick] --out sim-out/attacks
    python -m simulations.weight_sweep [--quick]
"""

from __future__ import annotations

import hashlib
import random
import sys
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import partial

from simulations.determinism import shared_verifier
from tp_crypto.identity import Identity
from tp_crypto.signed import sign
from tp_net.protocol.bandwidth_weights import (
    WEIGHT_MAX,
    WEIGHT_MIN,
    MeasurementScheduler,
    Outcome,
    Sample,
    TargetKind,
    predicted_share,
)
from tp_net.protocol.descriptors import (
    ModelOffer,
    NodeDescriptor,
    RelayDescriptor,
    SignedDescriptor,
    sign_descriptor,
)
from tp_net.protocol.directory import (
    DOCUMENT_DOMAIN,
    Directory,
    DirectoryError,
    Trust,
    verify_document,
)
from tp_net.protocol.path_selection import choose_guards, choose_node, choose_path
from tp_node.authority_core import Admission, AuthorityCore, Schedule

ATTACKS = ("honest", "inflation", "refuse-and-read", "sybil-flood", "byzantine-authority")
FRACTIONS = (0.05, 0.1, 0.2, 0.3)
QUICK_FRACTIONS = (0.1, 0.3)
HONEST_RELAYS = 50
HONEST_NODES = 10
ATTACKER_RELAYS = 2
NEWCOMERS = 5
SYBILS = 2_000
QUICK_SYBILS = 200
RELAY_KBPS = 1_000.0
NODE_TOKENS_PER_S = 20.0
REFUSED_SHARE = 0.75
AUTHORITIES = 3
THRESHOLD = 2
PERIOD_S = 3_600
MEASURING_PERIODS = 4
VOTING_PERIODS = 3
REQUESTS = 2_000
QUICK_REQUESTS = 400
MODEL = "sweep-model"
NETWORK = "weight-sweep"
T0 = 500_000 * PERIOD_S  # a period boundary: the first voting period starts one period later
DELIVERY_S = 1.0  # votes and signatures reach the other authorities this long after they are sent


@dataclass(frozen=True)
class SweepPoint:
    attack: str
    fraction: float  # the adversary's share of the true (measurable) capacity
    measured_fraction_relays: float  # its share of the document's relay weight
    measured_fraction_nodes: float
    predicted: float  # measured_fraction_relays * measured_fraction_nodes
    compromise_rate: float
    periods_signed: int  # voting periods whose document gathered THRESHOLD signatures (of VOTING_PERIODS)
    sybils_admitted: int
    newcomers_admitted: int  # of NEWCOMERS (sybil-flood only)


def _identity(kind: str, number: int) -> Identity:
    return Identity(hashlib.sha256(f"{NETWORK} {kind} {number}".encode()).digest())


def _address(number: int) -> str:
    return f"ws://{(number % 200) + 20}.{number // 200}.0.1:9000/"  # one /16 per relay


@dataclass
class _World:
    """Who runs what, what each declares and can really do."""

    relays: list[tuple[Identity, str, int]]  # identity, address, declared KB/s
    nodes: list[tuple[Identity, bytes, int]]  # identity, home relay, declared slots
    rates: dict[bytes, float]  # true KB/s or tokens/s
    refuses: dict[bytes, float]
    attacker: set[bytes]
    newcomers: list[tuple[Identity, str, int]]
    sybils: list[tuple[Identity, str, int]]

    def signed(self, published: int) -> tuple[list[SignedDescriptor], list[SignedDescriptor]]:
        """(relays, nodes), signed as published at `published` (each period's republish)."""
        expires = published + 3 * PERIOD_S
        nodes = [
            sign_descriptor(
                who,
                NodeDescriptor(
                    who.node_id,
                    (bytes(32),),
                    (home,),
                    (ModelOffer(MODEL, bytes(32), 1, "Q4_K_M", 2048, slots, 0),),
                    "1",
                    published,
                    expires,
                ),
            )
            for who, home, slots in self.nodes
        ]
        return _fresh(self.relays, published), nodes


def _world(attack: str, fraction: float, sybils: int) -> _World:
    inflated = attack == "inflation"
    bad_relay_kbps = fraction * HONEST_RELAYS * RELAY_KBPS / ((1 - fraction) * ATTACKER_RELAYS)
    bad_node_tps = fraction * HONEST_NODES * NODE_TOKENS_PER_S / (1 - fraction)
    honest = [(_identity("relay", n), _address(n), int(RELAY_KBPS)) for n in range(HONEST_RELAYS)]
    bad = [
        (_identity("relay", n), _address(n), 10**7 if inflated else max(1, round(bad_relay_kbps)))
        for n in range(HONEST_RELAYS, HONEST_RELAYS + ATTACKER_RELAYS)
    ]
    home_of_bad_node = honest[-1][0].node_id
    nodes = [(_identity("node", n), honest[n][0].node_id, 4) for n in range(HONEST_NODES)]
    bad_node = (_identity("node", HONEST_NODES), home_of_bad_node, 1024 if inflated else 4)
    rates = {who.node_id: RELAY_KBPS for who, _, _ in honest}
    rates.update((who.node_id, bad_relay_kbps) for who, _, _ in bad)
    rates.update((who.node_id, NODE_TOKENS_PER_S) for who, _, _ in nodes)
    rates[bad_node[0].node_id] = bad_node_tps
    first_new = HONEST_RELAYS + ATTACKER_RELAYS
    newcomers = [
        (_identity("relay", n), _address(n), int(RELAY_KBPS)) for n in range(first_new, first_new + NEWCOMERS)
    ]
    fakes = [
        (_identity("sybil", n), f"ws://{224 + n // 256 % 16}.{n % 256}.{n // 4096}.1:9000/", 10**7)
        for n in range(sybils if attack == "sybil-flood" else 0)
    ]
    rates.update((who.node_id, RELAY_KBPS) for who, _, _ in newcomers)
    return _World(
        [*honest, *bad],
        [*nodes, bad_node],
        rates,
        {bad_node[0].node_id: REFUSED_SHARE if attack == "refuse-and-read" else 0.0},
        {who.node_id for who, _, _ in bad} | {bad_node[0].node_id},
        newcomers if attack == "sybil-flood" else [],
        fakes,
    )


def _measure(world: _World, rng: random.Random) -> dict[bytes, int]:
    """What one honest authority's real MeasurementScheduler finds against the link model's true rates."""
    scheduler = MeasurementScheduler(PERIOD_S, random.Random(rng.random()))
    relay_ids = [who.node_id for who, _, _ in [*world.relays, *world.newcomers]]
    scheduler.set_targets(relay_ids, [who.node_id for who, _, _ in world.nodes])
    noise = random.Random(rng.random())
    for second in range(MEASURING_PERIODS * PERIOD_S):
        for probe in scheduler.due(float(second)):
            if probe.kind is TargetKind.NODE and noise.random() < world.refuses.get(probe.node_id, 0.0):
                scheduler.record(probe.node_id, Sample(Outcome.OVERLOADED))
            else:
                rate = world.rates[probe.node_id] * noise.uniform(0.9, 1.1)
                scheduler.record(probe.node_id, Sample(Outcome.ANSWERED, rate))
    return scheduler.weights()


class _Authorities:
    """Three real authority cores; the last is the adversary's in "byzantine-authority"."""

    def __init__(self, world: _World, byzantine: bool) -> None:
        self.identities = [_identity("authority", n) for n in range(AUTHORITIES)]
        # One memoized signature check for the three (as the simulator's machines share theirs).
        ids = frozenset(a.node_id for a in self.identities)
        self.trust = Trust(NETWORK, ids, THRESHOLD, verify=shared_verifier(True))
        self.cores = [
            AuthorityCore(
                who, self.trust, period_s=PERIOD_S, admission=Admission.OPEN, check_reachability=True
            )
            for who in self.identities
        ]
        self.honest = self.cores[:-1] if byzantine else self.cores
        self.byzantine = self.cores[-1] if byzantine else None
        self.world = world
        reachable = {who.node_id for who, _, _ in [*world.relays, *world.newcomers]}
        self._reachable = reachable

    def publish(self, signed: Sequence[SignedDescriptor], now: float) -> None:
        """Upload to every authority, then let each finish its reachability dials (the link model answers)."""
        for core in self.cores:
            for descriptor in signed:
                with suppress(DirectoryError):  # a share is full: refused, as over the wire
                    core.accept(descriptor, None, now)
            while due := core.queue.due(64):
                for node_id, _address in due:
                    core.reached(node_id, node_id in self._reachable, now)

    def decide(self, period: int, index: int) -> bool:
        """One voting period; whether every honest authority holds a document for it."""
        schedule = Schedule.of_period(period, PERIOD_S)
        votes = [
            (data, core)
            for sender in self.honest
            for data in [sender.make_vote(period)]
            for core in self.honest
            if core is not sender
        ]
        if self.byzantine is not None:
            votes += self._byzantine_votes(period, index)
        relays = [
            relay
            for data, core in votes
            for relay in self._deliver_vote(core, data, schedule.vote_at + DELIVERY_S)
        ]
        for relay in relays:
            relay()
        signatures = [(core, core.make_signature(period)) for core in self.honest]
        for sender, made in signatures:
            if made is None:
                continue
            for core in self.cores:
                if core is not sender:
                    body, signature = made
                    core.add_signature(period, body, sender.identity.node_id, signature, schedule.sign_at)
        if self.byzantine is not None and index >= 2:  # signs garbage: refused
            garbage = hashlib.sha256(b"garbage %d" % period).digest()
            signature = sign(self.byzantine.identity, DOCUMENT_DOMAIN, garbage)
            author = self.byzantine.identity.node_id
            for core in self.honest:
                with suppress(DirectoryError):
                    core.add_signature(period, garbage, author, signature, schedule.sign_at)
        held = [core.latest_document(float(period)) for core in self.honest]
        return all(
            d is not None and verify_document(d, self.trust, period).valid_after == period for d in held
        )

    def _byzantine_votes(self, period: int, index: int) -> list[tuple[bytes, AuthorityCore]]:
        """(signed vote, honest authority it is sent to)."""
        byzantine = self.byzantine
        assert byzantine is not None
        if index == 1:  # withholds
            return []
        world = self.world
        everyone = [who.node_id for who, _, _ in [*world.relays, *world.nodes, *world.newcomers]]
        garbage = {i: WEIGHT_MAX if i in world.attacker else WEIGHT_MIN for i in everyone}
        byzantine.record_weights(garbage)
        first = byzantine.make_vote(period)
        if index >= 2:  # votes garbage, the same to both
            return [(first, core) for core in self.honest]
        # Equivocates: another vote for the other authority, that moves an honest node's median weight.
        garbage[world.nodes[0][0].node_id] = WEIGHT_MAX
        byzantine.record_weights(garbage)
        second = byzantine.make_vote(period)
        return [(first, self.honest[0]), (second, self.honest[1])]

    def _deliver_vote(self, core: AuthorityCore, data: bytes, now: float) -> list[Callable[[], object]]:
        """A vote sent straight to `core`; its relays to the other honest authorities (to deliver after every
        vote sent straight has arrived, as they travel one more hop)."""
        news = core.add_vote(data, now)
        if news is None:
            return []
        proof = core.relay_proof(data)
        return [
            partial(other.add_vote, data, now + DELIVERY_S, proof)
            for other in self.honest
            if other is not core and other.identity.node_id != news.authority
        ]


def sweep_point(
    attack: str, fraction: float, seed: int = 1, requests: int = REQUESTS, sybils: int = SYBILS
) -> SweepPoint:
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; one of {ATTACKS}")
    rng = random.Random(f"{seed}:{attack}:{fraction}")
    world = _world(attack, fraction, sybils)
    authorities = _Authorities(world, attack == "byzantine-authority")
    relays, nodes = world.signed(T0)
    authorities.publish([*relays, *_fresh(world.sybils, T0)], T0 + 60)
    for core in authorities.honest:
        core.record_weights(_measure(world, rng))
    signed_periods = 0
    for index in range(VOTING_PERIODS):
        period = T0 + (index + 1) * PERIOD_S
        published = period - PERIOD_S // 2 - 60
        relays, nodes = world.signed(published)
        # The Sybils keep flooding (republished every period); newcomers join from the first vote on.
        flood = [*_fresh(world.sybils, published), *_fresh(world.newcomers, published)]
        authorities.publish([*relays, *flood, *nodes], published + 30)
        signed_periods += authorities.decide(period, index)
    document = authorities.honest[0].latest_document(float(period))
    assert document is not None, "no document: the honest authorities could not sign one"
    directory = verify_document(document, authorities.trust, period)
    return _point(
        attack, fraction, directory, world=world, rng=rng, requests=requests, signed_periods=signed_periods
    )


def _fresh(relays: Sequence[tuple[Identity, str, int]], published: int) -> list[SignedDescriptor]:
    expires = published + 3 * PERIOD_S
    return [
        sign_descriptor(
            who, RelayDescriptor(who.node_id, address, (bytes(32),), kbps, "", "1", published, expires)
        )
        for who, address, kbps in relays
    ]


def _point(
    attack: str,
    fraction: float,
    directory: Directory,
    *,
    world: _World,
    rng: random.Random,
    requests: int,
    signed_periods: int,
) -> SweepPoint:
    weights = directory.weights
    all_relays, all_nodes = list(directory.relays.values()), directory.nodes_for(MODEL)
    relay_ids, node_ids = [r.node_id for r in all_relays], [n.node_id for n in all_nodes]
    f_relays = predicted_share(weights, relay_ids, world.attacker)
    f_nodes = predicted_share(weights, node_ids, world.attacker)
    compromised = 0
    for _ in range(requests):
        guards = choose_guards(all_relays, rng, weights=weights)
        node = choose_node(all_nodes, MODEL, rng, weights=weights)
        assert node is not None
        path = choose_path(all_relays, node, guards, rng, weights=weights)
        compromised += path[0].node_id in world.attacker and node.node_id in world.attacker
    return SweepPoint(
        attack,
        fraction,
        f_relays,
        f_nodes,
        f_relays * f_nodes,
        compromised / requests,
        signed_periods,
        sum(who.node_id in directory.relays for who, _, _ in world.sybils),
        sum(who.node_id in directory.relays for who, _, _ in world.newcomers),
    )


def sweep(quick: bool = False, seed: int = 1) -> list[SweepPoint]:
    fractions = QUICK_FRACTIONS if quick else FRACTIONS
    requests, sybils = (QUICK_REQUESTS, QUICK_SYBILS) if quick else (REQUESTS, SYBILS)
    return [sweep_point(attack, f, seed, requests, sybils) for attack in ATTACKS for f in fractions]


def table(points: Sequence[SweepPoint]) -> str:
    lines = [
        "| attack | f | measured share (relays, nodes) | predicted f_r*f_n | compromised | "
        "documents signed | Sybils / newcomers admitted |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in points:
        admitted = f"{p.sybils_admitted} / {p.newcomers_admitted}" if p.attack == "sybil-flood" else ""
        measured = f"{p.measured_fraction_relays:.3f}, {p.measured_fraction_nodes:.3f}"
        signed = f"{p.periods_signed} of {VOTING_PERIODS}"
        lines.append(
            f"| {p.attack} | {p.fraction:.2f} | {measured} | {p.predicted:.4f} | {p.compromise_rate:.4f}"
            f" | {signed} | {admitted} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    print(table(sweep(quick="--quick" in args)))


if __name__ == "__main__":
    main()
