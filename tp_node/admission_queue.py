"""Descriptors an authority holds back until it may admit them (sans-IO; tp_node.authority_core decides).

Reachability (as Tor's authorities test a relay's ORPort before listing it): a relay descriptor with a new
node id, or a new address, waits here until the authority has dialed the address it claims and the peer
there proved the descriptor's identity key (a Noise XX link authenticates the node id:
tp_node.reachability). Only then does it count toward the admitted descriptors (`ACCEPTED_DESCRIPTORS_MAX`);
an unreachable one is dropped. So a flood of descriptors that claim addresses in thousands of /16s costs the
authority one short dial each, and fills only this bounded set:

- at most `PENDING_RELAYS_MAX` relays wait, at most `PENDING_RELAYS_PER_SUBNET_MAX` per /16 (IPv6 /32,
  hostname). When the set is full, an upload from a network with fewer waiting relays than the fullest
  network evicts the oldest waiting relay of that network; from one of the fullest networks it is refused.
  An honest newcomer from a network of its own always gets in, and is dialed in arrival order.

GPU node descriptors have no address to test: a node is admitted once one of its listed home relays is
admitted. Until then it waits (at most `WAITING_NODES_MAX`, the oldest evicted first): a node usually
publishes right after its home relays did, and their reachability dials are still under way.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tp_net.protocol.descriptors import Descriptor, NodeDescriptor, RelayDescriptor, SignedDescriptor
from tp_net.protocol.directory import DirectoryError
from tp_net.protocol.path_selection import subnet_key

PENDING_RELAYS_MAX = 4_096
PENDING_RELAYS_PER_SUBNET_MAX = 4
WAITING_NODES_MAX = 1_024


@dataclass
class Held:
    """A descriptor held back, and what its upload carried (forwarded again once admitted, unless it came
    as another authority's forward)."""

    descriptor: Descriptor
    signed: SignedDescriptor
    invitation: bytes | None
    forwarded: bool


class AdmissionQueue:
    def __init__(self) -> None:
        self._relays: dict[bytes, Held] = {}  # arrival order
        self._undialed: dict[bytes, None] = {}  # arrival order
        self._by_subnet: dict[str, list[bytes]] = {}  # oldest first
        self._subnet_counts: Counter[int] = Counter()  # how many networks hold n waiting relays
        self._nodes: dict[bytes, Held] = {}  # arrival order

    # --- relays -----------------------------------------------------------------------------------

    def hold_relay(self, held: Held) -> None:
        """Hold a relay until its reachability dial; DirectoryError when its network's share is full."""
        assert isinstance(held.descriptor, RelayDescriptor)
        node_id = held.descriptor.node_id
        self.drop_relay(node_id)  # a newer descriptor replaces a waiting one (and waits again)
        subnet = subnet_key(held.descriptor.address)
        waiting = len(self._by_subnet.get(subnet, ()))
        if waiting >= PENDING_RELAYS_PER_SUBNET_MAX:
            raise DirectoryError(
                f"descriptor refused: {PENDING_RELAYS_PER_SUBNET_MAX} relays of {subnet!r} await reachability"
            )
        if len(self._relays) >= PENDING_RELAYS_MAX:
            fullest = max(n for n, networks in self._subnet_counts.items() if networks)
            if waiting >= fullest:
                raise DirectoryError("descriptor refused: too many relays await reachability")
            self._evict_one_of(fullest)
        self._relays[node_id] = held
        self._undialed[node_id] = None
        self._move(subnet, +1)
        self._by_subnet.setdefault(subnet, []).append(node_id)

    def due(self, count: int) -> list[tuple[bytes, str]]:
        """Up to `count` waiting relays to dial now, oldest first: (node id, claimed address)."""
        picked = []
        for node_id in list(self._undialed)[:count]:
            del self._undialed[node_id]
            descriptor = self._relays[node_id].descriptor
            assert isinstance(descriptor, RelayDescriptor)
            picked.append((node_id, descriptor.address))
        return picked

    def take_relay(self, node_id: bytes) -> Held | None:
        """The waiting relay `node_id` (its dial finished), no longer held; None if it was evicted."""
        held = self._relays.get(node_id)
        if held is not None:
            self.drop_relay(node_id)
        return held

    def drop_relay(self, node_id: bytes) -> None:
        held = self._relays.pop(node_id, None)
        if held is None:
            return
        self._undialed.pop(node_id, None)
        assert isinstance(held.descriptor, RelayDescriptor)
        subnet = subnet_key(held.descriptor.address)
        self._by_subnet[subnet].remove(node_id)
        self._move(subnet, -1)
        if not self._by_subnet[subnet]:
            del self._by_subnet[subnet]

    def _evict_one_of(self, count: int) -> None:
        for ids in self._by_subnet.values():  # networks in the order they first had a relay waiting
            if len(ids) == count:
                self.drop_relay(ids[0])
                return

    def _move(self, subnet: str, step: int) -> None:
        before = len(self._by_subnet.get(subnet, ()))
        if before:
            self._subnet_counts[before] -= 1
        if before + step:
            self._subnet_counts[before + step] += 1

    # --- nodes ------------------------------------------------------------------------------------

    def hold_node(self, held: Held) -> None:
        """Hold a node until one of its home relays is admitted (the oldest waiting node makes room)."""
        assert isinstance(held.descriptor, NodeDescriptor)
        self._nodes.pop(held.descriptor.node_id, None)
        if len(self._nodes) >= WAITING_NODES_MAX:
            del self._nodes[next(iter(self._nodes))]
        self._nodes[held.descriptor.node_id] = held

    def nodes_homed_at(self, relay_id: bytes) -> list[Held]:
        """The waiting nodes that list `relay_id` as a home relay, no longer held."""
        homed = [
            held
            for held in self._nodes.values()
            if isinstance(held.descriptor, NodeDescriptor) and relay_id in held.descriptor.home_relays
        ]
        for held in homed:
            del self._nodes[held.descriptor.node_id]
        return homed

    # --- both -------------------------------------------------------------------------------------

    def forget_expired(self, now: float) -> None:
        for node_id in [k for k, held in self._relays.items() if held.descriptor.expires <= now]:
            self.drop_relay(node_id)
        self._nodes = {k: held for k, held in self._nodes.items() if held.descriptor.expires > now}

    def waiting(self, node_id: bytes) -> bool:
        return node_id in self._relays or node_id in self._nodes

    @property
    def relays_waiting(self) -> int:
        return len(self._relays)

    @property
    def nodes_waiting(self) -> int:
        return len(self._nodes)
