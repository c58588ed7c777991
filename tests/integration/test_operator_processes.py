"""An operator's path with real processes on 127.0.0.1: the README's relay quickstart (init, run from the
config file, status), /metrics, JSON logs, and a node configured the same way whose status shows its model."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from bootstrap.new_network import BOOTSTRAP_FILE_NAME, create_network
from tp_dev.local_network import free_ports, home_relay_argument
from tp_dev.processes import python_process

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART_HEADING = "## Run a relay from a config file"
# What the README's commands become on a test machine: loopback and free ports only.
LOCAL_VALUES = {"0.0.0.0:7000": "127.0.0.1:0", "9100": "0"}


def quickstart_commands() -> list[list[str]]:
    section = (ROOT / "README.md").read_text().split(QUICKSTART_HEADING, 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def localised(argv: list[str], tmp_path: Path) -> list[str]:
    """README arguments with test-machine values; file names land in tmp_path."""
    values = [LOCAL_VALUES.get(arg, arg) for arg in argv]
    return [str(tmp_path / arg) if arg.endswith((".toml", "-data")) else arg for arg in values]


async def run_cli(module: str, *argv: str) -> str:
    result = await trio.run_process(
        [sys.executable, "-m", module, *argv], capture_stdout=True, capture_stderr=True, check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


async def status(module: str, config: Path) -> dict[str, Any]:
    reply: dict[str, Any] = json.loads(await run_cli(module, "status", "--config", str(config), "--json"))
    return reply


async def scrape(url: str) -> str:
    host_port = url.removeprefix("http://").split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n")
        reply = b""
        while chunk := await stream.receive_some(65536):
            reply += chunk
    return reply.decode()


async def test_the_readme_relay_quickstart_and_a_configured_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    init, run, ask = quickstart_commands()
    assert (init[:2], run[:2], ask[:2]) == (
        ["tp-relay", "init"],
        ["tp-relay", "--config"],
        ["tp-relay", "status"],
    )
    (authority_port,) = free_ports(1)  # nobody listens there: the relay's publishing just retries
    create_network(
        tmp_path / "net", "ops-test", [f"ws://127.0.0.1:{authority_port}/"], 1, period_s=4, local=True
    )
    bootstrap = str(tmp_path / "net" / BOOTSTRAP_FILE_NAME)
    await run_cli("tp_node.relay_cli", *localised(init[1:], tmp_path), "--bootstrap", bootstrap)
    relay_config = tmp_path / "relay.toml"
    monkeypatch.setenv("TP_RELAY_LOG_FORMAT", "json")  # the environment layer, over the file
    with (tmp_path / "relay.log").open("wb") as relay_log:
        relay_args = ["tp_node.relay_cli", *localised(run[1:], tmp_path)]
        async with python_process(relay_args, stderr=relay_log.fileno()) as relay:
            text = await run_cli("tp_node.relay_cli", *localised(ask[1:], tmp_path))
            assert f"relay {relay.announcement['node_id'][:16]}" in text
            assert "links: 0 (none)" in text
            metrics = await scrape(relay.announcement["metrics"])
            assert relay.announcement["metrics"].startswith("http://127.0.0.1:")
            assert "HTTP/1.1 200 OK" in metrics
            assert "tp_links 0" in metrics
            await _configured_node(tmp_path, home_relay_argument(relay), bootstrap, relay_config)
    lines = (tmp_path / "relay.log").read_text().splitlines()
    assert lines
    assert all(json.loads(line)["level"] for line in lines)


async def _configured_node(tmp_path: Path, home: str, bootstrap: str, relay_config: Path) -> None:
    node_config = tmp_path / "node.toml"
    await run_cli(
        "tp_node.node_cli",
        "init",
        "--config",
        str(node_config),
        "--data-dir",
        str(tmp_path / "node-data"),
        "--home-relay",
        home,
        "--bootstrap",
        bootstrap,
        "--engine",
        "fake",
    )
    async with python_process(["tp_node.node_cli", "--config", str(node_config)]) as node:
        node_status = await status("tp_node.node_cli", node_config)
        assert node_status["node_id"] == node.announcement["node_id"]
        assert node_status["links"]["count"] == 1
        assert [model["id"] for model in node_status["models"]] == ["fake"]
        assert node_status["load"]["requests"] == 0
        with trio.fail_after(10):
            while (relay_status := await status("tp_node.relay_cli", relay_config))["links"]["count"] < 1:
                await trio.sleep(0.1)
        assert relay_status["links"]["peers"] == [node.announcement["node_id"][:16]]
