"""A small token.place network of real processes on 127.0.0.1 (integration tests, benchmarks, the demo)."""

from __future__ import annotations

import secrets
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bootstrap.new_network import BOOTSTRAP_FILE_NAME, create_network
from tp_dev.processes import StartedProcess, python_process
from tp_net.protocol.circuit_client import HopInfo


@dataclass
class LocalNetwork:
    relays: list[StartedProcess]
    node: StartedProcess
    bootstrap_file: Path

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


LOCAL_PERIOD_S = 4


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now (authorities need known addresses before they start)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@asynccontextmanager
async def local_network(
    data_dir: Path,
    *,
    relay_count: int = 3,
    authority_count: int = 3,
    threshold: int = 2,
    period_s: int = LOCAL_PERIOD_S,
    node_args: Sequence[str] = (),
    relay_prefix: Sequence[str] = (),
    log_level: str = "info",
    node_module: str = "tp_node.node_cli",
) -> AsyncIterator[LocalNetwork]:
    """`relay_count` tp-relay processes, the first `authority_count` of them the authorities of a new
    local network (threshold-of-authority_count), and one tp-node homed on the last relay (`node_module`:
    tp-node's, or one that runs it with another engine, e.g. the traffic harness's)."""
    if not 1 <= authority_count <= relay_count:
        raise ValueError("authority_count must be in 1..relay_count")
    addresses = [f"ws://127.0.0.1:{port}/" for port in free_ports(authority_count)]
    network_dir = data_dir / "network"
    create_network(
        network_dir, f"local-{secrets.token_hex(4)}", addresses, threshold, period_s=period_s, local=True
    )
    bootstrap_file = network_dir / BOOTSTRAP_FILE_NAME
    async with AsyncExitStack() as stack:
        relays = []
        for index in range(relay_count):
            if index < authority_count:
                place = ["--listen", addresses[index][5:-1], "--authority"]
                place += ["--data-dir", str(network_dir / f"authority-{index + 1}")]
            else:
                place = ["--listen", "127.0.0.1:0", "--data-dir", str(data_dir / f"relay{index}")]
            relay_args = [
                "tp_node.relay_cli",
                *place,
                "--bootstrap",
                str(bootstrap_file),
                "--log-level",
                log_level,
            ]
            relays.append(await stack.enter_async_context(python_process(relay_args, prefix=relay_prefix)))
        node = await stack.enter_async_context(
            python_process(
                [
                    node_module,
                    "--home-relay",
                    home_relay_argument(relays[-1]),
                    "--data-dir",
                    str(data_dir / "node"),
                    "--bootstrap",
                    str(bootstrap_file),
                    "--log-level",
                    log_level,
                    *(() if "--model" in node_args else ("--engine", "fake")),
                    *node_args,
                ]
            )
        )
        yield LocalNetwork(relays, node, bootstrap_file)
