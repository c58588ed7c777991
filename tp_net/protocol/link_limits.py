"""Limits on the links a listener accepts, sans-IO: the counters and the decisions; trio code applies them.

Every accepted connection holds a file descriptor from the moment TCP accepts it. A listener counts its
connections per source address and in all, and refuses (closes at once) one that would pass
`links_per_address_max` or `links_max`, before any handshake runs. `links_max` stays below the process's
file descriptor limit (`links_max_for_fds`), so a flood of connections cannot take the descriptors the
relay needs for its own dials, files and honest peers.

An accepted link that carries no circuit and no cell for `idle_timeout_s` is closed, unless its peer is one
the relay keeps (a relay or GPU node listed in its current directory): strangers cannot park idle links.

A hop handles each link's received frames in turns (fair_turns) of at most `LINK_TURN_COST_MAX`, with a
scheduler round between turns, and reads a link's next message only once its last one is handled: a
flooding link waits behind every other link's frames, and TCP backpressure slows its sender.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass

from tp_net.protocol.cells import CellCommand
from tp_net.protocol.frames import Cell, Frame

# Accepted connections from one source address at a time. An honest address holds a handful (a gateway's
# link per guard, a node's link to its home relay, a relay's link per peer relay); a single-host test
# network holds a few dozen on 127.0.0.1.
LINKS_PER_ADDRESS_MAX = 128
# Accepted connections at a time, all addresses together (lowered to fit the fd limit: links_max_for_fds).
LINKS_MAX = 8192
# File descriptors kept out of links_max_for_fds for everything but accepted links (dials, files, logs).
FDS_RESERVED = 256
# An accepted link with no circuit and no cell for this long is closed (peers the relay keeps excepted).
LINK_IDLE_TIMEOUT_S = 300.0
# How often idle links are looked for, as a fraction of the idle timeout.
IDLE_CHECKS_PER_TIMEOUT = 4
# A hop's fair share per link per scheduler round (fair_turns), in cost units: a frame costs 1, a CREATE
# (the hop runs a handshake for it: two X25519 operations, ~100x a cell's work) costs LINK_CREATE_TURN_COST.
LINK_TURN_COST_MAX = 16
LINK_CREATE_TURN_COST = LINK_TURN_COST_MAX // 2
# IPv6 sources are counted per network of this prefix length: one subscriber usually holds a whole /64.
IPV6_SOURCE_PREFIX_BITS = 64


def source_key(host: str) -> str:
    """What per-address limits count a source address as: an IPv4 address itself (also when IPv4-mapped),
    an IPv6 address as its /IPV6_SOURCE_PREFIX_BITS network; anything else (a name) as it is."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_SOURCE_PREFIX_BITS), strict=False))
    return str(address)


def links_max_for_fds(fds_max: int) -> int:
    """LINKS_MAX, lowered to leave FDS_RESERVED of a process's `fds_max` descriptors for the rest."""
    return max(1, min(LINKS_MAX, fds_max - FDS_RESERVED))


@dataclass(frozen=True)
class LinkLimits:
    links_per_address_max: int = LINKS_PER_ADDRESS_MAX
    links_max: int = LINKS_MAX
    idle_timeout_s: float = LINK_IDLE_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.links_per_address_max < 1 or self.links_max < 1:
            raise ValueError("link caps must be at least 1")
        if self.idle_timeout_s <= 0:
            raise ValueError(f"idle_timeout_s must be positive, not {self.idle_timeout_s}")

    @property
    def idle_check_interval_s(self) -> float:
        return self.idle_timeout_s / IDLE_CHECKS_PER_TIMEOUT


class ConnectionCounter:
    """Open accepted connections, per source address and in all. `None` is an unknown address (in-memory
    transports): such connections count toward `links_max` only."""

    def __init__(self, limits: LinkLimits) -> None:
        self.limits = limits
        self._per_address: Counter[str] = Counter()
        self.open = 0
        self.refused = 0

    def from_address(self, address: str | None) -> int:
        return self._per_address[address] if address is not None else 0

    def admit(self, address: str | None) -> bool:
        """Count a new connection from `address`, or refuse it (False, nothing counted) past a cap."""
        over_address = address is not None and self._per_address[address] >= self.limits.links_per_address_max
        if over_address or self.open >= self.limits.links_max:
            self.refused += 1
            return False
        self.open += 1
        if address is not None:
            self._per_address[address] += 1
        return True

    def release(self, address: str | None) -> None:
        """A connection admitted from `address` closed."""
        self.open -= 1
        if address is not None:
            remaining = self._per_address[address] - 1
            if remaining > 0:
                self._per_address[address] = remaining
            else:
                del self._per_address[address]


def link_is_idle(
    *, now: float, last_cell_at: float, circuits: int, kept: bool, idle_timeout_s: float
) -> bool:
    """Whether an accepted link should be closed as idle: no circuits, no cell for `idle_timeout_s`, and not
    a peer the relay keeps. Pings and padding do not count as use."""
    return not kept and circuits == 0 and now - last_cell_at >= idle_timeout_s


def turn_cost(frame: Frame) -> int:
    """What handling a received frame counts toward its link's turn."""
    if isinstance(frame, Cell) and frame.command == CellCommand.CREATE:
        return LINK_CREATE_TURN_COST
    return 1


def fair_turns(frames: list[Frame]) -> list[list[Frame]]:
    """A received message's frames cut, in order, into turns of at most LINK_TURN_COST_MAX (a frame that
    costs more on its own is a turn by itself): one turn per link per scheduler round."""
    turns: list[list[Frame]] = []
    turn: list[Frame] = []
    cost = 0
    for frame in frames:
        frame_cost = turn_cost(frame)
        if turn and cost + frame_cost > LINK_TURN_COST_MAX:
            turns.append(turn)
            turn, cost = [], 0
        turn.append(frame)
        cost += frame_cost
    if turn:
        turns.append(turn)
    return turns
