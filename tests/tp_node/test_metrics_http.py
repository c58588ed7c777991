"""Prometheus /metrics for relays and nodes: the exposition text, the small HTTP server, loopback."""

from __future__ import annotations

from typing import Any

import trio

from tp_cli.common import metrics_address
from tp_node.metrics_http import answer, render_metrics, request_target, serve_metrics

STATUS: dict[str, Any] = {
    "role": "node",
    "version": "0.1.0",
    "uptime_s": 12.5,
    "links": {"count": 2, "peers": ["aa", "client"]},
    "circuits": 3,
    "bandwidth": {"cells_received": 40, "cells_sent": 50},
    "load": {"queued_cells": 1, "requests": 2},
    "models": [{"id": 'tiny "q4"', "active": 1, "queued": 1, "slots": 2, "queue_limit": 8}],
}


def test_the_exposition_has_help_type_and_samples() -> None:
    text = render_metrics(STATUS)
    assert text.endswith("\n")
    assert "# TYPE tp_cells_received_total counter\ntp_cells_received_total 40\n" in text
    assert "# TYPE tp_links gauge\ntp_links 2\n" in text
    assert 'tp_info{role="node",version="0.1.0"} 1' in text
    assert 'tp_model_active_requests{model="tiny \\"q4\\""} 1' in text  # label values escaped
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or " " in line


def test_a_relay_has_no_model_samples() -> None:
    relay = {key: value for key, value in STATUS.items() if key != "models"}
    assert "tp_model_" not in render_metrics(relay)


def test_requests_are_routed() -> None:
    assert request_target(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n") == ("GET", "/metrics")
    assert request_target(b"garbage\r\n\r\n") is None
    assert answer(b"GET /metrics HTTP/1.1\r\n\r\n", lambda: STATUS).startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer(b"GET / HTTP/1.1\r\n\r\n", lambda: STATUS).startswith(b"HTTP/1.1 404")
    assert answer(b"POST /metrics HTTP/1.1\r\n\r\n", lambda: STATUS).startswith(b"HTTP/1.1 405")
    assert answer(b"hello\r\n\r\n", lambda: STATUS).startswith(b"HTTP/1.1 400")


def test_a_bare_port_binds_loopback() -> None:
    assert metrics_address("9100") == ("127.0.0.1", 9100)
    assert metrics_address("0.0.0.0:9100") == ("0.0.0.0", 9100)


async def test_the_server_answers_a_scrape() -> None:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_metrics, "127.0.0.1", 0, lambda: STATUS)
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = b""
            while chunk := await stream.receive_some(65536):
                reply += chunk
        nursery.cancel_scope.cancel()
    head, body = reply.split(b"\r\n\r\n", 1)
    assert b"Content-Type: text/plain; version=0.0.4" in head
    assert body.decode() == render_metrics(STATUS)
