"""Prometheus `/metrics` for relays and nodes: the text exposition format over a minimal HTTP/1.1 server.

Opt-in (`--metrics`), bound to loopback unless the operator names another address. The request parsing and
the rendering are sans-IO; `serve_metrics` only moves bytes. Samples come from the same snapshot as
`tp-relay status`, so counting costs nothing per cell beyond an integer increment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from tp_node.listen_errors import naming_listener

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_HEAD_BYTES_MAX = 8192
REQUEST_TIMEOUT_S = 5.0
HEAD_END = b"\r\n\r\n"


def label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# name, kind, help, (section, field) of the status snapshot
SCALARS = (
    ("tp_uptime_seconds", "gauge", "Seconds since the role started.", ("uptime_s", None)),
    ("tp_links", "gauge", "Open links.", ("links", "count")),
    ("tp_circuits", "gauge", "Circuits through or ending at this hop.", ("circuits", None)),
    ("tp_cells_received_total", "counter", "Cells received on all links.", ("bandwidth", "cells_received")),
    ("tp_cells_sent_total", "counter", "Cells queued for sending on all links.", ("bandwidth", "cells_sent")),
    ("tp_queued_cells", "gauge", "Cells waiting to be written to links.", ("load", "queued_cells")),
)
PER_MODEL = (
    ("tp_model_active_requests", "active", "Requests generating now."),
    ("tp_model_queued_requests", "queued", "Requests waiting for a slot."),
    ("tp_model_slots", "slots", "Requests that may generate at once."),
)
Family = tuple[str, str, str, list[tuple[str, float]]]  # name, kind, help, [(labels, value)]


def render_metrics(status: dict[str, Any]) -> str:
    """A status snapshot (tp_node.vitals) in the Prometheus text format."""
    info = f'{{role="{label(status["role"])}",version="{label(status["version"])}"}}'
    families: list[Family] = [("tp_info", "gauge", "Role and software version.", [(info, 1)])]
    for name, kind, help_text, (section, field) in SCALARS:
        value = status[section] if field is None else status[section][field]
        families.append((name, kind, help_text, [("", value)]))
    models = status.get("models", [])
    for name, key, help_text in PER_MODEL if models else ():
        values = [(f'{{model="{label(model["id"])}"}}', model[key]) for model in models]
        families.append((name, "gauge", help_text, values))
    lines = []
    for name, kind, help_text, samples in families:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{labels} {value}" for labels, value in samples]
    return "\n".join(lines) + "\n"


def request_target(head: bytes) -> tuple[str, str] | None:
    """(method, path) of an HTTP request head, or None when it is not one."""
    first_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = first_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    return parts[0], parts[1].split("?", 1)[0]


def response(status: int, reason: str, body: str, content_type: str = "text/plain; charset=utf-8") -> bytes:
    payload = body.encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + payload


def answer(head: bytes, status: Callable[[], dict[str, Any]]) -> bytes:
    target = request_target(head)
    if target is None:
        return response(400, "Bad Request", "bad request\n")
    method, path = target
    if path != METRICS_PATH:
        return response(404, "Not Found", f"only {METRICS_PATH} is served\n")
    if method not in ("GET", "HEAD"):
        return response(405, "Method Not Allowed", "GET only\n")
    return response(200, "OK", render_metrics(status()), CONTENT_TYPE)


async def serve_metrics(
    host: str,
    port: int,
    status: Callable[[], dict[str, Any]],
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve /metrics on host:port until cancelled; reports the URL."""
    with naming_listener("Prometheus /metrics", "--metrics", host, port):
        listeners = await trio.open_tcp_listeners(port, host=host)
    bound_host, bound_port = listeners[0].socket.getsockname()[:2]
    log.info("metrics on http://%s:%d%s", bound_host, bound_port, METRICS_PATH)
    task_status.started(f"http://{bound_host}:{bound_port}{METRICS_PATH}")

    async def handler(stream: trio.SocketStream) -> None:
        await _handle(stream, status)

    await trio.serve_listeners(handler, listeners)


async def _handle(stream: trio.abc.Stream, status: Callable[[], dict[str, Any]]) -> None:
    async with stream:
        head = b""
        with trio.move_on_after(REQUEST_TIMEOUT_S):
            while HEAD_END not in head and len(head) <= REQUEST_HEAD_BYTES_MAX:
                data = await stream.receive_some(REQUEST_HEAD_BYTES_MAX)
                if not data:
                    break
                head += data
        if HEAD_END not in head:
            return
        try:
            await stream.send_all(answer(head, status))
        except trio.BrokenResourceError:
            log.debug("metrics client left before its answer")
