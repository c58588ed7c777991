"""tp-relay's first stdout line says both where it listens and what its descriptor advertises: an operator
behind a proxy or NAT (`--advertise`) sees the address the network will dial, not only the local one."""

from __future__ import annotations

from pathlib import Path

from bootstrap.new_network import BOOTSTRAP_FILE_NAME, create_network
from tp_dev.local_network import free_ports
from tp_dev.processes import python_process

ADVERTISED = "ws://127.0.0.1:9/"  # discard port: never dialed by this test


async def test_the_announcement_names_the_listen_and_the_advertised_address(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    create_network(tmp_path / "net", "announce", [f"ws://127.0.0.1:{port}/"], 1, period_s=300, local=True)
    relay = [
        "tp_node.relay_cli",
        "--listen",
        "127.0.0.1:0",
        "--advertise",
        ADVERTISED,
        "--data-dir",
        str(tmp_path / "relay"),
        "--bootstrap",
        str(tmp_path / "net" / BOOTSTRAP_FILE_NAME),
    ]
    async with python_process(relay) as started:
        assert started.announcement["advertised"] == ADVERTISED
        assert started.announcement["address"].startswith("ws://127.0.0.1:")
        assert started.announcement["address"] != ADVERTISED
