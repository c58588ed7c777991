"""A restarted relay and a restarted GPU node answer with the onion keys they had: circuits that clients
build from the current directory keep working across restarts.

A relay on a fixed port and a node homed on it, each with its data directory; a client builds a circuit
relay -> node with the hops the processes announced (what the directory would list) and completes a request.
Both processes are stopped and started again; the same client-side hops, from before the restart, must
still build a circuit and get an answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import trio

from bootstrap.new_network import BOOTSTRAP_FILE_NAME, create_network
from tp_dev.local_network import free_ports
from tp_dev.processes import StartedProcess, python_process
from tp_net.protocol.circuit_client import HopInfo
from tp_net.protocol.errors import TokenPlaceError
from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.trio.client import ClientLink
from tp_net.trio.transport_ws import WebSocketDialer
from tp_node.onion_keys import ONION_KEY_FILE

# Nothing listens on port 1: the authorities are unreachable and the processes just keep trying.
UNREACHABLE_AUTHORITY = "ws://127.0.0.1:1/"
REQUEST = {"messages": [{"role": "user", "content": "still there?"}], "max_tokens": 4}
ANSWER_TIMEOUT_S = 30.0  # the node links to its home relay shortly after it announces itself
RETRY_INTERVAL_S = 0.2


def hop(process: StartedProcess) -> HopInfo:
    announcement = process.announcement
    address = announcement.get("address")
    return HopInfo(bytes.fromhex(announcement["node_id"]), bytes.fromhex(announcement["onion_key"]), address)


async def answer(dialer: WebSocketDialer, path: list[HopInfo]) -> list[dict[str, object]]:
    """A request's chunks through a circuit on `path`, retried until the node has linked to its relay."""
    with trio.fail_after(ANSWER_TIMEOUT_S):
        while True:
            try:
                async with ClientLink.connect(dialer, path[0]) as link:
                    circuit = await link.build_circuit(path)
                    return [chunk async for chunk in circuit.request(INFERENCE_SERVICE, REQUEST)]
            except TokenPlaceError:
                await trio.sleep(RETRY_INTERVAL_S)


async def test_circuits_built_from_the_old_keys_work_after_relay_and_node_restart(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    create_network(tmp_path, "restart-test", [UNREACHABLE_AUTHORITY], 1, period_s=60, local=True)
    bootstrap = str(tmp_path / BOOTSTRAP_FILE_NAME)
    listen = f"127.0.0.1:{free_ports(1)[0]}"  # the relay comes back on its address, as a real one does
    relay_args = ["tp_node.relay_cli", "--listen", listen, "--bootstrap", bootstrap]
    relay_args += ["--data-dir", str(tmp_path / "relay"), "--log-level", "error"]
    dialer = WebSocketDialer(nursery)
    directory: list[HopInfo] = []  # the hops as announced before the restart
    keys = []
    answers = []
    for _ in range(2):
        async with python_process(relay_args) as relay:
            keys.append(relay.announcement["onion_key"])
            home = f"{relay.announcement['node_id']}@{relay.announcement['address']}"
            node_args = ["tp_node.node_cli", "--home-relay", home, "--bootstrap", bootstrap]
            node_args += ["--engine", "fake", "--data-dir", str(tmp_path / "node"), "--log-level", "error"]
            async with python_process(node_args) as node:
                keys.append(node.announcement["onion_key"])
                directory = directory or [hop(relay), hop(node)]
                answers.append(await answer(dialer, directory))
    assert answers[0] == answers[1] and answers[1][-1]["finish_reason"] == "length"
    assert keys[0] == keys[2] and keys[1] == keys[3]
    stored = json.loads((tmp_path / "relay" / ONION_KEY_FILE).read_text())
    assert [key["public"] for key in stored] == [keys[0]]
    assert (tmp_path / "node" / ONION_KEY_FILE).stat().st_mode & 0o777 == 0o600
