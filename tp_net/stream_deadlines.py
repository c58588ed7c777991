"""How long a client waits on a request stream before it gives the path up, sans-IO.

A relay that vanishes without a word stalls a stream silently: nothing closes, nothing errs. Link liveness
(tp_net.liveness) notices within its silence deadline and destroys the circuit, but a request should not
wait that long. So a client bounds the wait for the first chunk of an answer (which includes the node's
queue and prompt processing) and the gap between chunks (one token's time at a node that is producing), each
plus an allowance per hop of the circuit: every hop adds a link round trip and a relay's queue, and the
allowance covers a slow home connection (hundreds of ms), not loopback. A deadline that passes before the
first chunk means "try another path"; after it, the answer ends with a clean error.
"""

from __future__ import annotations

from dataclasses import dataclass

# The node's queue wait and prompt processing, before the first chunk of its answer.
FIRST_CHUNK_DEADLINE_S = 20.0
# The gap between two chunks of an answer being produced (a token at the slowest node worth using).
CHUNK_GAP_DEADLINE_S = 3.0
# Added to both per hop of the circuit (relays and the node): one WAN round trip with loss and queueing.
HOP_ALLOWANCE_S = 0.4


@dataclass(frozen=True)
class StreamDeadlines:
    first_chunk_s: float
    chunk_gap_s: float


def stream_deadlines(hops: int) -> StreamDeadlines:
    """The deadlines for a request over a circuit of `hops` hops."""
    if hops < 1:
        raise ValueError(f"a circuit has at least one hop, not {hops}")
    allowance = hops * HOP_ALLOWANCE_S
    return StreamDeadlines(FIRST_CHUNK_DEADLINE_S + allowance, CHUNK_GAP_DEADLINE_S + allowance)
