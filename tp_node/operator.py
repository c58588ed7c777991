"""The operator's view of a running role: the control socket (always) and /metrics (when asked for)."""

from __future__ import annotations

import argparse

import trio

from tp_node.control import CONTROL_SOCKET_NAME
from tp_node.control_socket import serve_control
from tp_node.metrics_http import serve_metrics
from tp_node.vitals import Vitals


async def start_operator_services(
    nursery: trio.Nursery, args: argparse.Namespace, vitals: Vitals
) -> str | None:
    """Serve `status` on DATA_DIR/control.sock and, with --metrics, /metrics; returns the metrics URL."""
    await nursery.start(serve_control, args.data_dir / CONTROL_SOCKET_NAME, vitals.snapshot)
    if args.metrics is None:
        return None
    url: str = await nursery.start(serve_metrics, *args.metrics, vitals.snapshot)
    return url
