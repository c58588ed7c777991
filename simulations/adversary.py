"""Hostile relays: the real tp_node.relay.Relay with a hook on the cells it receives and sends.

Every hostile relay logs what a relay can see and shares it with the others (the coalition): as a guard,
the address of the client that created a circuit and when; as a circuit's last relay, the GPU node it
extended to and when. The coalition links the two by timing. On top of logging a behaviour picks what it
does to the cells of circuits it carries: "drop" (blackholes some circuits), "delay" (holds every cell),
"tag" (flips a bit in a relayed cell), "replay" (sends a relayed cell twice).
"""

from __future__ import annotations

import dataclasses
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import trio

from simulations.netsim import SimChannel
from tp_crypto.identity import Identity
from tp_net.protocol.cells import CellCommand
from tp_net.protocol.frames import Cell, Frame
from tp_net.protocol.hop_outputs import HopOutput, SendCell
from tp_net.trio.services import ServiceHandler
from tp_net.trio.transport import Dialer
from tp_node.relay import Relay

LINK_WINDOW_S = 3.0  # a last-hop sighting is linked to the latest guard sighting this long before it


@dataclass
class Coalition:
    """What the colluding relays saw, shared."""

    node_ids: frozenset[bytes] = frozenset()
    guard_sightings: list[tuple[float, str, str]] = field(default_factory=list)  # (t, relay, client)
    exit_sightings: list[tuple[float, str, bytes]] = field(default_factory=list)  # (t, relay, node id)

    def linked_pairs(self) -> dict[str, set[tuple[str, bytes]]]:
        """Per colluding guard: the (client, node) pairs it could link, matching each last-hop sighting
        with the latest guard sighting shortly before it."""
        linked: dict[str, set[tuple[str, bytes]]] = {}
        guards = sorted(self.guard_sightings)
        for when, _relay, node_id in sorted(self.exit_sightings):
            earlier = [g for g in guards if when - LINK_WINDOW_S <= g[0] <= when]
            if earlier:
                _t, guard, client = earlier[-1]
                linked.setdefault(guard, set()).add((client, node_id))
        return linked


Store = Callable[[str, bytes], None]


class SimRelay(Relay):
    """A relay whose received cells can be observed (what it stores goes through `store`)."""

    sim_name = ""
    store: Store = staticmethod(lambda name, data: None)

    def link_remote(self, link_id: int) -> str:
        """The address (machine name) of the peer on a link, as the relay's socket would show it."""
        link = self.link(link_id)
        channel = link.channel if link is not None else None
        return channel.remote.name if isinstance(channel, SimChannel) else "?"


class LeakyRelay(SimRelay):
    """A deliberately broken relay: whenever it receives cells it stores plaintext that a bug put within
    its reach (`leak`, the prompt of the latest request). The invariant checker must catch it."""

    leak: Callable[[], bytes] = staticmethod(lambda: b"")

    def on_frames(self, link_id: int, frames: list[Frame]) -> None:
        leaked = self.leak()
        if leaked and any(isinstance(f, Cell) for f in frames):
            self.store(self.sim_name, leaked)
        super().on_frames(link_id, frames)


class HostileRelay(SimRelay):
    def __init__(
        self,
        identity: Identity,
        onion_keys: list[bytes],
        *,
        dialer: Dialer,
        rng: random.Random,
        services: Mapping[str, ServiceHandler],
        coalition: Coalition,
        behaviour: str,
        delay_s: float,
        meddle_chance: float,
    ) -> None:
        super().__init__(identity, onion_keys, dialer=dialer, rng=rng, services=services)
        self.coalition = coalition
        self.behaviour = behaviour
        self._rng = random.Random(rng.random())  # the relay's own draws stay as an honest relay's
        self._delay_s = delay_s
        self._meddle_chance = meddle_chance
        self._blackholed: dict[tuple[int, int], bool] = {}
        self._held: deque[tuple[float, int, list[Frame]]] = deque()
        self._held_changed = trio.Event()
        self.cells_touched = 0

    async def run_background(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(super().run_background)
            if self.behaviour == "delay":
                nursery.start_soon(self._release_held)

    def on_frames(self, link_id: int, frames: list[Frame]) -> None:
        now = trio.current_time()
        for frame in frames:
            if (
                isinstance(frame, Cell)
                and frame.command == CellCommand.CREATE
                and self.core.peer_of(link_id) is None
            ):
                self.coalition.guard_sightings.append((now, self.sim_name, self.link_remote(link_id)))
        if self.behaviour == "delay":
            self._held.append((now + self._delay_s, link_id, frames))
            self._held_changed.set()
            return
        super().on_frames(
            link_id, [self._meddle(link_id, frame) for frame in frames if self._keeps(link_id, frame)]
        )

    def apply(self, outputs: list[HopOutput]) -> None:
        now = trio.current_time()
        for output in outputs:
            if isinstance(output, SendCell) and output.cell.command == CellCommand.CREATE:
                peer = self.core.peer_of(output.link)
                if peer in self.coalition.node_ids:
                    assert peer is not None
                    self.coalition.exit_sightings.append((now, self.sim_name, peer))
        if self.behaviour == "replay":
            outputs = outputs + [o for o in outputs if isinstance(o, SendCell) and self._picked()]
        super().apply(outputs)

    def _keeps(self, link_id: int, frame: Frame) -> bool:
        if self.behaviour != "drop" or not isinstance(frame, Cell) or frame.command == CellCommand.CREATE:
            return True
        key = (link_id, frame.circuit_id)
        if key not in self._blackholed:
            self._blackholed[key] = self._rng.random() < self._meddle_chance
        self.cells_touched += self._blackholed[key]
        return not self._blackholed[key]

    def _meddle(self, link_id: int, frame: Frame) -> Frame:
        if self.behaviour != "tag" or not isinstance(frame, Cell) or frame.command != CellCommand.RELAY:
            return frame
        if not self._picked():
            return frame
        self.cells_touched += 1
        body = bytearray(frame.body)
        body[self._rng.randrange(len(body))] ^= 1 << self._rng.randrange(8)
        return dataclasses.replace(frame, body=bytes(body))

    def _picked(self) -> bool:
        picked = self._rng.random() < self._meddle_chance
        self.cells_touched += picked
        return picked

    async def _release_held(self) -> None:
        while True:
            while not self._held:
                await self._held_changed.wait()
                self._held_changed = trio.Event()
            release_at, link_id, frames = self._held[0]
            await trio.sleep_until(release_at)
            self._held.popleft()
            if self.link(link_id) is not None:
                super().on_frames(link_id, frames)
