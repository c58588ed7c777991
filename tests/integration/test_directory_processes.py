"""Three authorities (2-of-3) and two more relays as processes on 127.0.0.1 converge on one signed
directory; it survives the loss of one authority; a client that knows only the bootstrap file gets it."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import trio

from tp_crypto.errors import TokenPlaceError
from tp_dev.local_network import LocalNetwork, local_network
from tp_net.protocol.bootstrap_config import load_bootstrap
from tp_net.protocol.circuit_client import HopInfo
from tp_net.protocol.directory import Directory, verify_document
from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.protocol.path_selection import (
    LOCAL_NETWORK_RULES,
    choose_guards,
    choose_node,
    choose_path,
    circuit_hops,
)
from tp_net.trio.client import ClientLink
from tp_net.trio.directory_client import fetch_directory, fetch_document
from tp_net.trio.transport_ws import WebSocketDialer
from tp_node.engine import FAKE_MODEL_ID

CONVERGE_TIMEOUT_S = 40


async def wait_for_directory(
    network: LocalNetwork, dialer: WebSocketDialer, *, relays: int, newer_than: int = 0
) -> Directory:
    """Poll a non-authority relay until its cached document lists `relays` relays."""
    bootstrap = load_bootstrap(network.bootstrap_file)
    relay = network.relays[-1].announcement
    hop = HopInfo(bytes.fromhex(relay["node_id"]), None, relay["address"])
    with trio.fail_after(CONVERGE_TIMEOUT_S):
        while True:
            try:
                directory = verify_document(await fetch_document(dialer, hop), bootstrap.trust(), time.time())
                if len(directory.relays) >= relays and directory.valid_after > newer_than:
                    return directory
            except Exception:
                pass
            await trio.sleep(0.5)


async def test_authorities_converge_and_survive_losing_one(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with local_network(tmp_path, relay_count=5, authority_count=3, threshold=2) as network:
        dialer = WebSocketDialer(nursery)
        directory = await wait_for_directory(network, dialer, relays=5)
        assert len(directory.signers) >= 2
        ids = {bytes.fromhex(r.announcement["node_id"]) for r in network.relays}
        assert set(directory.relays) == ids

        # Every authority serves the same document once all three have signed it.
        bootstrap = load_bootstrap(network.bootstrap_file)
        fetched, _ = await fetch_directory(
            dialer, [a.hop() for a in bootstrap.authorities], bootstrap.trust(), random.Random(1), time.time()
        )
        assert set(fetched.relays) == ids

        os.kill(network.relays[0].process.pid, signal.SIGKILL)
        await network.relays[0].process.wait()
        later = await wait_for_directory(network, dialer, relays=4, newer_than=directory.valid_after)
        assert bytes.fromhex(network.relays[0].announcement["node_id"]) not in later.signers
        assert len(later.signers) == 2


async def test_a_client_with_only_the_bootstrap_file_reaches_a_node_serving_a_model(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with local_network(tmp_path, relay_count=5, authority_count=3, threshold=2) as network:
        bootstrap = load_bootstrap(network.bootstrap_file)
        dialer = WebSocketDialer(nursery)
        rng = random.Random(7)
        sources = [a.hop() for a in bootstrap.authorities]
        with trio.fail_after(CONVERGE_TIMEOUT_S):
            while True:
                try:
                    directory, _ = await fetch_directory(dialer, sources, bootstrap.trust(), rng, time.time())
                    if directory.nodes_for(FAKE_MODEL_ID):
                        break
                except TokenPlaceError:
                    pass
                await trio.sleep(0.5)
        node = choose_node(directory.nodes_for(FAKE_MODEL_ID), FAKE_MODEL_ID, rng)
        assert node is not None and node.node_id == bytes.fromhex(network.node.announcement["node_id"])
        relays = list(directory.relays.values())
        guards = choose_guards(relays, rng, rules=LOCAL_NETWORK_RULES)
        path = choose_path(relays, node, guards, rng, rules=LOCAL_NETWORK_RULES)
        hops = circuit_hops(path, node)
        async with ClientLink.connect(dialer, hops[0]) as link:
            circuit = await link.build_circuit(hops)
            request = {
                "kind": "chat",
                "model": FAKE_MODEL_ID,
                "messages": [{"role": "user", "content": "hi"}],
            }
            chunks = [chunk async for chunk in circuit.request(INFERENCE_SERVICE, request)]
        assert chunks[-1]["finish_reason"] in ("length", "stop")
        assert "".join(chunk.get("text", "") for chunk in chunks[:-1])
