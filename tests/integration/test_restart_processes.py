"""A restarted relay and a restarted GPU node answer with the onion keys they had: circuits that clients
build from the current directory keep working across restarts."""

from __future__ import annotations

import json
from pathlib import Path

from bootstrap.new_network import BOOTSTRAP_FILE_NAME, create_network
from tp_node.onion_keys import ONION_KEY_FILE
from tp_node.processes import python_process

# Nothing listens on port 1: the authorities are unreachable and the processes just keep trying.
UNREACHABLE_AUTHORITY = "ws://127.0.0.1:1/"


async def test_relay_and_node_keep_their_onion_keys_across_restarts(tmp_path: Path) -> None:
    create_network(tmp_path, "restart-test", [UNREACHABLE_AUTHORITY], 1, period_s=60, local=True)
    bootstrap = str(tmp_path / BOOTSTRAP_FILE_NAME)
    relay_args = ["tp_node.relay_cli", "--listen", "127.0.0.1:0", "--bootstrap", bootstrap]
    relay_args += ["--data-dir", str(tmp_path / "relay"), "--log-level", "error"]
    keys = []
    for _ in range(2):
        async with python_process(relay_args) as relay:
            keys.append(relay.announcement["onion_key"])
            home = f"{relay.announcement['node_id']}@{relay.announcement['address']}"
            node_args = ["tp_node.node_cli", "--home-relay", home, "--bootstrap", bootstrap]
            node_args += ["--engine", "fake", "--data-dir", str(tmp_path / "node"), "--log-level", "error"]
            async with python_process(node_args) as node:
                keys.append(node.announcement["onion_key"])
    assert keys[0] == keys[2] and keys[1] == keys[3]
    stored = json.loads((tmp_path / "relay" / ONION_KEY_FILE).read_text())
    assert [key["public"] for key in stored] == [keys[0]]
    assert (tmp_path / "node" / ONION_KEY_FILE).stat().st_mode & 0o777 == 0o600
