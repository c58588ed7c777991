"""Link liveness, sans-IO: when to send a keepalive Ping, and when a silent link is dead.

A peer that vanishes without a word (a pulled cable, an expired NAT mapping, a stopped process) closes
nothing: TCP sees no FIN and, while nothing is sent, no error either. So each side of a link watches what it
receives. After `keepalive_idle_s` with nothing received it sends a Ping, and another each
`keepalive_idle_s` while the silence lasts; any frame received (the Pong, a cell, anything) counts as life.
After `silence_deadline_s` with nothing received the link is dead: the owner closes it at once, without a
goodbye, and so destroys every circuit on it both ways (tp_net.protocol.circuit_hop.HopCore.link_down at a
hop, ClientLink's link_lost at a client).

Pings are cheap and bounded: at most one per `keepalive_idle_s` per link, and the peer owes at most one Pong
(tp_net.trio.link_pump). A Ping is not use: an idle link is still closed as idle
(tp_net.protocol.link_limits).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# With nothing received on a link for this long, send a Ping (and again each time this long passes).
LINK_KEEPALIVE_IDLE_S = 5.0
# With nothing received on a link for this long, the link is dead and is closed. Three Pings fit in it,
# and a Pong has a full keepalive period to come back: far above any honest round trip.
LINK_SILENCE_DEADLINE_S = 15.0


class LivenessAction(enum.Enum):
    WAIT = "wait"
    PING = "send a ping"
    DEAD = "close the link"


@dataclass(frozen=True)
class LivenessLimits:
    keepalive_idle_s: float = LINK_KEEPALIVE_IDLE_S
    silence_deadline_s: float = LINK_SILENCE_DEADLINE_S

    def __post_init__(self) -> None:
        if not 0 < self.keepalive_idle_s < self.silence_deadline_s:
            raise ValueError(
                f"need 0 < keepalive_idle_s ({self.keepalive_idle_s}) "
                f"< silence_deadline_s ({self.silence_deadline_s})"
            )


class LinkLiveness:
    """The liveness clock of one link. Times are seconds on any monotonic clock the caller uses."""

    def __init__(self, now: float, limits: LivenessLimits | None = None) -> None:
        self.limits = limits or LivenessLimits()
        self.last_received_at = now
        self._last_ping_at: float | None = None
        self._next_token = 1
        self.pings_sent = 0

    def received(self, now: float) -> None:
        """Anything came in on the link."""
        self.last_received_at = max(self.last_received_at, now)
        self._last_ping_at = None

    def poll(self, now: float) -> LivenessAction:
        """What to do now: WAIT, PING (then call `ping_sent`), or DEAD. The thresholds are the very sums
        `next_check_at` returns, so a caller woken at that time never finds WAIT again (floats: a - b >= c
        may differ from a >= b + c)."""
        if now >= self._dead_at():
            return LivenessAction.DEAD
        return LivenessAction.PING if now >= self._ping_at() else LivenessAction.WAIT

    def ping_sent(self, now: float) -> int:
        """Note a Ping going out now; returns its token."""
        self._last_ping_at = now
        self.pings_sent += 1
        token = self._next_token
        self._next_token += 1
        return token

    def next_check_at(self) -> float:
        """When `poll` may next answer something other than WAIT (if nothing is received meanwhile)."""
        return min(self._dead_at(), self._ping_at())

    def _dead_at(self) -> float:
        return self.last_received_at + self.limits.silence_deadline_s

    def _ping_at(self) -> float:
        since = self.last_received_at if self._last_ping_at is None else self._last_ping_at
        return since + self.limits.keepalive_idle_s
