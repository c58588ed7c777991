"""The simulated network: machines in regions, links with latency, bandwidth and loss, partitions, crashes.

It is the in-memory transport plus a link model: listeners are tp_net.trio.transport_memory listeners
(addresses are the relays' ws:// URLs), and a dial builds a pair of SimChannels (MemoryChannels that say when
each message arrives) and hands the accepting end over with `MemoryNetwork.hand_over`. A message sent at t
arrives at t' = (when the sender's uplink has pushed it out) + the link's one-way latency; the receiving
end sleeps until t' on trio's (virtual) clock. Links are reliable and ordered, like WebSockets over TCP:
loss shows as a link that breaks. SimChannel is in the transport conformance suite
(tests/tp_net/test_transport_conformance.py). A machine whose cable is
pulled (`SilentMachines`) is the other failure: its links stay open and deliver nothing, both ways, and dials
to or from it hang, until the cable is back; only the roles' own liveness and deadlines notice.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from simulations.config import NetworkModel
from tp_net.protocol.errors import DialError
from tp_net.trio.transport import Channel
from tp_net.trio.transport_memory import (
    MEMORY_CHANNEL_BUFFER_MESSAGES,
    MemoryChannel,
    MemoryListener,
    MemoryNetwork,
    Timed,
)

SIM_EPOCH_S = 1_800_000_000.0  # a whole hour: a period boundary for every period_s that divides 3600
BITS_PER_BYTE = 8
MBPS = 1_000_000 / BITS_PER_BYTE  # bytes per second in one Mbit/s

Tap = Callable[["Machine", bytes], None]


@dataclass(eq=False)
class Machine:
    name: str
    kind: str  # "authority", "relay", "node", "client"
    region: str
    uplink_bytes_per_s: float
    clock_skew_s: float = 0.0
    address: str | None = None  # relays: where they listen
    up: bool = True
    busy_until: float = 0.0  # when the uplink has sent everything queued so far
    epoch_s: float = SIM_EPOCH_S  # the wall clock at virtual time 0
    channels: dict[SimChannel, None] = field(default_factory=dict)  # ordered: a crash is reproducible

    def wall_clock(self) -> float:
        """This machine's idea of unix time: virtual time, the epoch, and its skew."""
        return self.epoch_s + trio.current_time() + self.clock_skew_s


# A dial to or from a silent machine hangs this long (TCP's SYN retries), then fails.
SILENT_DIAL_TIMEOUT_S = 30.0


class SilentMachines:
    """The silent-failure model: machines whose cable is pulled. Nothing closes; what is sent to or from them
    is lost while it lasts (a message on its way when the cable is pulled arrives)."""

    def __init__(self) -> None:
        self._silent: set[str] = set()
        self.messages_lost = 0

    def pull(self, machine: Machine) -> None:
        self._silent.add(machine.name)

    def plug(self, machine: Machine) -> None:
        self._silent.discard(machine.name)

    def silences(self, a: Machine, b: Machine) -> bool:
        return a.name in self._silent or b.name in self._silent


class SimNetwork:
    def __init__(self, model: NetworkModel, rng: random.Random, *, epoch_s: float = SIM_EPOCH_S) -> None:
        self.model = model
        self.epoch_s = epoch_s
        self.memory = MemoryNetwork()
        self._rng = rng
        self._by_address: dict[str, Machine] = {}
        self._latency: dict[tuple[str, str], float] = {}
        self._cut_regions: set[str] = set()
        self.taps: list[Tap] = []  # called with (receiving machine, message) on every delivery
        self.bytes_delivered = 0
        self.links_dropped = 0
        self.silent = SilentMachines()

    # --- machines -----------------------------------------------------------------------------

    def add_machine(self, machine: Machine) -> None:
        machine.epoch_s = self.epoch_s
        if machine.address is not None:
            self._by_address[machine.address] = machine

    def listener(self, machine: Machine) -> MemoryListener:
        assert machine.address is not None
        return self.memory.listener(machine.address)

    def dialer(self, machine: Machine) -> SimDialer:
        return SimDialer(self, machine)

    def crash(self, machine: Machine) -> None:
        """The machine goes dark: every link it has breaks (its tasks are cancelled by the world)."""
        machine.up = False
        for channel in list(machine.channels):
            channel.break_link()

    # --- partitions ---------------------------------------------------------------------------

    def cut(self, regions: tuple[str, ...]) -> None:
        """Cut `regions` off from the rest: links across the cut break, dials across it fail."""
        self._cut_regions = set(regions)
        for machine in list(self._by_address.values()):
            for channel in list(machine.channels):
                if not self.reachable(channel.local, channel.remote):
                    channel.break_link()

    def heal(self) -> None:
        self._cut_regions = set()

    def reachable(self, a: Machine, b: Machine) -> bool:
        return (a.region in self._cut_regions) == (b.region in self._cut_regions)

    # --- links --------------------------------------------------------------------------------

    def latency_s(self, a: Machine, b: Machine) -> float:
        """One-way latency of the link between two machines, drawn once per pair."""
        key = (a.name, b.name) if a.name < b.name else (b.name, a.name)
        latency = self._latency.get(key)
        if latency is None:
            base_ms = (
                self.model.same_region_latency_ms
                if a.region == b.region
                else self.model.cross_region_latency_ms
            )
            jitter = math.exp(self._rng.gauss(0.0, self.model.latency_jitter_sigma))
            latency = self._latency[key] = base_ms * jitter / 1000
        return latency

    def drops(self) -> bool:
        chance = self.model.link_drop_per_message
        return chance > 0 and self._rng.random() < chance

    def deliver(self, machine: Machine, message: bytes) -> None:
        self.bytes_delivered += len(message)
        for tap in self.taps:
            tap(machine, message)


class SimDialer:
    """What one machine dials with: a channel to a listening relay, after one round trip."""

    def __init__(self, network: SimNetwork, machine: Machine) -> None:
        self._network = network
        self.machine = machine

    async def dial(self, address: str) -> Channel:
        network = self._network
        target = network._by_address.get(address)
        if target is None:
            await trio.lowlevel.checkpoint()
            raise DialError(f"nothing listens on {address}")
        latency = network.latency_s(self.machine, target)
        await trio.sleep(2 * latency)  # the TCP handshake; the WebSocket upgrade rides on the first messages
        if network.silent.silences(self.machine, target):
            await trio.sleep(SILENT_DIAL_TIMEOUT_S)
            raise DialError(f"{address} did not answer")
        if not (self.machine.up and target.up and network.reachable(self.machine, target)):
            raise DialError(f"{address} is unreachable")
        forward = trio.open_memory_channel[Timed](MEMORY_CHANNEL_BUFFER_MESSAGES)
        backward = trio.open_memory_channel[Timed](MEMORY_CHANNEL_BUFFER_MESSAGES)
        client = SimChannel(network, self.machine, target, latency, outbound=forward[0], inbound=backward[1])
        server = SimChannel(network, target, self.machine, latency, outbound=backward[0], inbound=forward[1])
        client.peer, server.peer = server, client
        network.memory.hand_over(address, server)
        return client


class SimChannel(MemoryChannel):
    """One end of a simulated link: the in-memory channel, with the link model saying when each message
    arrives (the sender's uplink, then the link's latency) and when a message breaks the link (loss)."""

    def __init__(
        self,
        network: SimNetwork,
        local: Machine,
        remote: Machine,
        latency_s: float,
        *,
        outbound: trio.MemorySendChannel[Timed],
        inbound: trio.MemoryReceiveChannel[Timed],
    ) -> None:
        super().__init__(outbound, inbound)
        self._network = network
        self.local = local
        self.remote = remote  # what the local side learns of the peer: its address (the simulator's view)
        self.latency_s = latency_s
        self.peer: SimChannel | None = None
        local.channels[self] = None

    def arrival_time(self, message: bytes) -> float:
        if self._network.drops():
            self._network.links_dropped += 1
            self.break_link()
        start = max(trio.current_time(), self.local.busy_until)
        self.local.busy_until = start + len(message) / self.local.uplink_bytes_per_s
        return self.local.busy_until + self.latency_s

    async def send_message(self, message: bytes) -> None:
        if self._network.silent.silences(self.local, self.remote):  # a pulled cable: lost, nothing noticed
            self._network.silent.messages_lost += 1
            await trio.lowlevel.checkpoint()
            return
        await super().send_message(message)

    def delivered(self, message: bytes) -> None:
        self._network.deliver(self.local, message)

    def close(self) -> None:
        if self._network.silent.silences(self.local, self.remote):  # the FIN (or RST) is lost too
            self._inbound.close()
        else:
            super().close()
        self.local.channels.pop(self, None)

    def break_link(self) -> None:
        """Both ends fail at once (a reset, a crash, a partition)."""
        self.close()
        if self.peer is not None:
            self.peer.close()
