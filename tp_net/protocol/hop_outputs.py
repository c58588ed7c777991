"""What a hop's sans-IO core asks its IO layer to do, and the names it gives links and circuits.

The IO layer (tp_net.trio.hop_runtime) carries these out in the order the core produced them: `SendCell`,
`ConnectTo` (get a link to a node, then call HopCore.connect_result), `ServiceEvent` (a stream event for the
local service).
"""

from __future__ import annotations

from dataclasses import dataclass

from tp_net.protocol.frames import Cell
from tp_net.protocol.streams import StreamEvent

LinkId = int
CircuitRef = tuple[LinkId, int]  # (link towards the client, circuit id on it): a circuit's name at a hop


@dataclass(frozen=True)
class SendCell:
    link: LinkId
    cell: Cell


@dataclass(frozen=True)
class ConnectTo:
    """The IO layer should find or dial a link to `node_id` at `address`, then call connect_result."""

    request_id: int
    node_id: bytes
    address: str


@dataclass(frozen=True)
class ServiceEvent:
    circuit: CircuitRef
    event: StreamEvent


HopOutput = SendCell | ConnectTo | ServiceEvent
