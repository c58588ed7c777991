"""A small token.place network of real processes on 127.0.0.1 (integration tests, benchmarks, the demo)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from tp_net.circuit_client import HopInfo
from tp_node.processes import StartedProcess, python_process


@dataclass
class LocalNetwork:
    relays: list[StartedProcess]
    node: StartedProcess

    def relay_hop(self, index: int) -> HopInfo:
        announcement = self.relays[index].announcement
        return HopInfo(
            bytes.fromhex(announcement["node_id"]),
            bytes.fromhex(announcement["onion_key"]),
            announcement["address"],
        )

    def node_hop(self) -> HopInfo:
        announcement = self.node.announcement
        return HopInfo(bytes.fromhex(announcement["node_id"]), bytes.fromhex(announcement["onion_key"]))

    def path(self) -> list[HopInfo]:
        """guard -> middle -> the node's home relay -> node."""
        return [self.relay_hop(0), self.relay_hop(1), self.relay_hop(2), self.node_hop()]


def home_relay_argument(relay: StartedProcess) -> str:
    return f"{relay.announcement['node_id']}@{relay.announcement['address']}"


@asynccontextmanager
async def local_network(
    data_dir: Path,
    *,
    relay_count: int = 3,
    node_args: Sequence[str] = (),
    relay_prefix: Sequence[str] = (),
) -> AsyncIterator[LocalNetwork]:
    """`relay_count` tp-relay processes and one tp-node (fake engine) homed on the last relay."""
    async with AsyncExitStack() as stack:
        relays = []
        for index in range(relay_count):
            relay_args = [
                "tp_node.relay_cli",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                str(data_dir / f"relay{index}"),
            ]
            relays.append(await stack.enter_async_context(python_process(relay_args, prefix=relay_prefix)))
        node = await stack.enter_async_context(
            python_process(
                [
                    "tp_node.node_cli",
                    "--home-relay",
                    home_relay_argument(relays[-1]),
                    "--data-dir",
                    str(data_dir / "node"),
                    *node_args,
                ]
            )
        )
        yield LocalNetwork(relays, node)
