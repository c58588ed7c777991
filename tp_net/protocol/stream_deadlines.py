"""How long a client waits on a request stream before it gives the path up, sans-IO.

A relay that vanishes without a word stalls a stream silently: nothing closes, nothing errs. Link liveness
(tp_net.protocol.liveness) notices within its silence deadline and destroys the circuit, but a request should
not wait that long. So a client bounds the wait for the first chunk of an answer (which includes the node's
queue and prompt processing) and the gap between chunks (one token's time at a node that is producing), each
plus an allowance for the path: a few of its measured round trips, between a floor and a ceiling. The round
trip comes from the circuit's own build, which took one round trip to each hop in turn: on loopback the
allowance is the floor, on a slow home connection it grows with it. A circuit whose build was not timed gets
a fixed allowance per hop. A deadline that passes before the first chunk means "try another path"; after it,
the answer ends with a clean error.
"""

from __future__ import annotations

from dataclasses import dataclass

# The node's queue wait and prompt processing, before the first chunk of its answer.
FIRST_CHUNK_DEADLINE_S = 20.0
# The gap between two chunks of an answer being produced (a token at the slowest node worth using).
CHUNK_GAP_DEADLINE_S = 3.0
# Added to both: this many round trips of the path (client to node and back), measured when it was built:
# room for queueing and a retransmission or two (RTO >= 0.2 s) on the way.
PATH_ALLOWANCE_ROUND_TRIPS = 3
# ... but no less: a loaded machine's scheduling and one TCP retransmission (RTO >= 0.2 s) on a near path.
PATH_ALLOWANCE_FLOOR_S = 0.5
# ... and no more: past a 2 s round trip a path is not worth waiting on (and a slow build is often a busy
# machine, not a long path).
PATH_ALLOWANCE_CEILING_S = 8.0
# Added to both per hop of a circuit whose build was not timed: one WAN round trip with loss and queueing.
HOP_ALLOWANCE_S = 0.4


@dataclass(frozen=True)
class StreamDeadlines:
    first_chunk_s: float
    chunk_gap_s: float


def path_round_trip_s(hops: int, built_in_s: float) -> float:
    """The round trip to a circuit's last hop, from how long the circuit took to build: one round trip to
    the first hop, then one to the second, and so on, so hops * (hops + 1) / 2 link round trips, of which
    the path's round trip is hops (links assumed alike)."""
    return built_in_s * 2 / (hops + 1)


def stream_deadlines(hops: int, built_in_s: float | None = None) -> StreamDeadlines:
    """The deadlines for a request over a circuit of `hops` hops that took `built_in_s` to build (None:
    not timed)."""
    if hops < 1:
        raise ValueError(f"a circuit has at least one hop, not {hops}")
    if built_in_s is None:
        allowance = hops * HOP_ALLOWANCE_S
    else:
        measured = PATH_ALLOWANCE_ROUND_TRIPS * path_round_trip_s(hops, built_in_s)
        allowance = min(max(measured, PATH_ALLOWANCE_FLOOR_S), PATH_ALLOWANCE_CEILING_S)
    return StreamDeadlines(FIRST_CHUNK_DEADLINE_S + allowance, CHUNK_GAP_DEADLINE_S + allowance)
