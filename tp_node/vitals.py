"""What an operator may know about a running relay or node: links, circuits, cells, models and load.

One snapshot feeds both `tp-relay status` (the control socket) and `/metrics`. It holds counts and short
node ids only, never anything a circuit carries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tp_cli.launch import software_version
from tp_crypto.identity import short_id
from tp_net.protocol.frames import CELL_BODY_BYTES
from tp_net.trio.hop_runtime import HopRuntime
from tp_node.engine import ModelSource

ANONYMOUS_PEER = "client"


@dataclass
class Vitals:
    role: str
    runtime: HopRuntime
    engine: ModelSource | None = None
    directory: Callable[[], dict[str, Any]] | None = None  # relays: the document they serve
    started: float = field(default_factory=time.monotonic)

    def snapshot(self) -> dict[str, Any]:
        runtime = self.runtime
        peers = [short_id(peer) if peer else ANONYMOUS_PEER for peer in runtime.core.peers()]
        status: dict[str, Any] = {
            "role": self.role,
            "node_id": runtime.identity.node_id.hex(),
            "version": software_version(),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "links": {"count": len(peers), "peers": sorted(peers)},
            "circuits": runtime.core.circuit_count,
            "bandwidth": {
                "cells_received": runtime.cells_received,
                "cells_sent": runtime.cells_sent,
                "bytes_received": runtime.cells_received * CELL_BODY_BYTES,
                "bytes_sent": runtime.cells_sent * CELL_BODY_BYTES,
            },
            "load": {"queued_cells": runtime.queued_cells()},
        }
        if self.directory is not None:
            status["directory"] = self.directory()
        if self.engine is not None:
            models = [
                {
                    "id": model.model_id,
                    "active": model.active_requests,
                    "queued": model.queued_requests,
                    "slots": model.max_concurrent,
                    "queue_limit": model.queue_limit,
                }
                for model in self.engine.models()
            ]
            status["models"] = models
            status["load"]["requests"] = sum(
                model.active_requests + model.queued_requests for model in self.engine.models()
            )
        return status


def describe(status: dict[str, Any]) -> str:
    """The snapshot for a terminal."""
    bandwidth = status["bandwidth"]
    lines = [
        f"{status['role']} {status['node_id']} (version {status['version']}, up {status['uptime_s']:.0f} s)",
        f"links: {status['links']['count']} ({', '.join(status['links']['peers']) or 'none'})",
        f"circuits: {status['circuits']}",
        f"bandwidth: {bandwidth['bytes_received']} bytes in, {bandwidth['bytes_sent']} bytes out "
        f"({bandwidth['cells_received']} / {bandwidth['cells_sent']} cells)",
        f"load: {status['load']['queued_cells']} queued cells"
        + (f", {status['load']['requests']} requests" if "requests" in status["load"] else ""),
    ]
    if "directory" in status:
        lines.append(describe_directory(status["directory"]))
    for model in status.get("models", []):
        lines.append(
            f"model {model['id']}: {model['active']}/{model['slots']} slots busy, "
            f"{model['queued']}/{model['queue_limit']} queued"
        )
    return "\n".join(lines)


def describe_directory(directory: dict[str, Any]) -> str:
    network = f"network {directory['network']!r}"
    needs = f"{directory['threshold']} of {directory['authorities']} authorities"
    if directory.get("valid_after") is None:
        return f"directory: none yet ({network}: the first is signed once {needs} are up)"
    return (
        f"directory: {network}, valid from {directory['age_s']} s ago, {directory['signatures']} signatures "
        f"({needs} needed), {directory['relays']} relays, {directory['nodes']} nodes; "
        f"next due in {directory['next_due_in_s']} s"
    )
