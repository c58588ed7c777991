"""`tp-relay status` shows the role, the whole node id (to copy into --home-relay) and the directory: its
age, signatures and when the next one is due."""

from __future__ import annotations

from tests.tp_net.directory_factories import (
    NETWORK,
    PERIOD_S,
    T0,
    document,
    network_of,
    signed_document,
    signed_node,
    signed_relay,
)
from tp_net.protocol.bootstrap_config import Bootstrap, BootstrapAuthority
from tp_node.directory_duties import directory_status
from tp_node.directory_service import DirectoryService
from tp_node.vitals import describe

AUTHORITIES, TRUST = network_of(3, 2)
BOOTSTRAP = Bootstrap(
    NETWORK,
    2,
    PERIOD_S,
    tuple(BootstrapAuthority(a.node_id, f"ws://127.0.0.1:{7001 + i}/") for i, a in enumerate(AUTHORITIES)),
)
NODE_ID = "ab" * 32


def status(directory: dict[str, object]) -> dict[str, object]:
    return {
        "role": "authority",
        "node_id": NODE_ID,
        "version": "1",
        "uptime_s": 5.0,
        "links": {"count": 0, "peers": []},
        "circuits": 0,
        "bandwidth": {"cells_received": 0, "cells_sent": 0, "bytes_received": 0, "bytes_sent": 0},
        "load": {"queued_cells": 0},
        "directory": directory,
    }


def test_status_shows_the_role_the_whole_id_and_the_directory() -> None:
    service = DirectoryService(TRUST, wall_clock=lambda: T0 + 60)
    waiting = describe(status(directory_status(service, BOOTSTRAP, T0 + 60)))
    assert waiting.startswith(f"authority {NODE_ID} "), "the role, and the whole id to copy"
    assert "directory: none yet" in waiting and "2 of 3 authorities" in waiting

    body = document([signed_relay(1), signed_relay(2), signed_node(1)]).encode()
    assert service.offer_document(signed_document(body, AUTHORITIES[:2]))
    shown = describe(status(directory_status(service, BOOTSTRAP, T0 + 60)))
    assert "valid from 60 s ago, 2 signatures (2 of 3 authorities needed), 2 relays, 1 nodes" in shown
    assert f"next due in {PERIOD_S * 3 // 4 - 60} s" in shown
