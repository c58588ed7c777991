"""`tp-relay status` / `tp-node status` when the role answers, and when nothing runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from tp_node import node_cli, relay_cli
from tp_node.control import CONTROL_SOCKET_NAME
from tp_node.control_socket import serve_control

STATUS = {
    "role": "relay",
    "node_id": "ab" * 32,
    "version": "0.1.0",
    "uptime_s": 5.0,
    "links": {"count": 1, "peers": ["client"]},
    "circuits": 2,
    "bandwidth": {"cells_received": 1, "cells_sent": 2, "bytes_received": 1024, "bytes_sent": 2048},
    "load": {"queued_cells": 0},
}


def test_nothing_running_is_exit_1_with_a_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert node_cli.main(["status", "--data-dir", str(tmp_path)]) == 1  # no --home-relay needed to ask
    assert f"nothing answers on {tmp_path / CONTROL_SOCKET_NAME}" in capsys.readouterr().err


async def test_status_prints_what_the_socket_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, tmp_path / CONTROL_SOCKET_NAME, lambda: STATUS)
        for flags in ([], ["--json"]):
            argv = ["status", "--data-dir", str(tmp_path), *flags]
            assert await trio.to_thread.run_sync(relay_cli.main, argv) == 0
        nursery.cancel_scope.cancel()
    text, as_json = capsys.readouterr().out.split("\n{", 1)
    assert "circuits: 2" in text
    assert json.loads("{" + as_json) == STATUS
