"""The operator snapshot: what `status` prints and /metrics exports, for a relay and a node."""

from __future__ import annotations

import random

from tp_cli.launch import new_onion_keys
from tp_crypto.identity import Identity
from tp_net.protocol.circuit_hop import HopCore
from tp_net.trio.hop_runtime import HopRuntime
from tp_node.engine import FakeEngine
from tp_node.vitals import Vitals, describe


def runtime() -> HopRuntime:
    identity = Identity(bytes(range(32)))
    keys, _ = new_onion_keys()
    core = HopCore(keys, rng=random.Random(1), can_extend=True, identity_key=identity.x25519_private)
    return HopRuntime(identity, core)


def test_a_relay_snapshot_counts_links_circuits_and_cells() -> None:
    hop = runtime()
    hop.core.link_up(1, bytes(32), we_dialed=False)
    hop.core.link_up(2, None, we_dialed=False)
    hop.cells_received, hop.cells_sent = 3, 5
    status = Vitals("relay", hop).snapshot()
    assert status["node_id"] == hop.identity.node_id.hex()
    assert status["links"] == {"count": 2, "peers": ["0000000000000000", "client"]}
    assert status["circuits"] == 0
    assert status["bandwidth"] == {
        "cells_received": 3,
        "cells_sent": 5,
        "bytes_received": 3 * 1024,
        "bytes_sent": 5 * 1024,
    }
    assert "models" not in status
    text = describe(status)
    assert "links: 2 (0000000000000000, client)" in text
    assert "3072 bytes in, 5120 bytes out" in text


def test_a_node_snapshot_lists_models_and_load() -> None:
    status = Vitals("node", runtime(), FakeEngine()).snapshot()
    (model,) = status["models"]
    assert (model["active"], model["queued"]) == (0, 0)
    assert status["load"] == {"queued_cells": 0, "requests": 0}
    assert f"model {model['id']}: 0/" in describe(status)
