"""Sealed requests through a gateway on another machine (Linux network namespaces, root; issue 19's
acceptance): the authorities, the home relay, the GPU node (tiny llama model), a `tp-gateway --public` and the
user each in their own namespace. The user's sealed chat through the remote gateway gets the same answer as
the same request through the user's own local gateway; the remote gateway refuses the user's plaintext; and
neither the prompt nor the answer is in a packet capture of the gateway host's interface (its HTTP port and
everything it forwards) or in any process's logs at DEBUG."""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from bootstrap.new_network import BOOTSTRAP_FILE_NAME, create_network
from tests.reliability import netns
from tests.reliability.netns import Host
from tests.reliability.test_netns import AUTHORITIES, PERIOD_S, relay_address, require_netns, start_relay
from tp_dev.processes import python_process

pytestmark = pytest.mark.netns

GATEWAY_PORT = 8000
SENTINEL = "armadillo-4c2f"
REQUEST_TIMEOUT_S = 150.0


@pytest.fixture
def hosts() -> Iterator[dict[str, Host]]:
    require_netns()
    with netns.closing_hosts([*AUTHORITIES, "home", "node", "gateway", "user"]) as made:
        yield made


def captured_payloads(path: Path) -> bytes:
    data, frames = path.read_bytes(), []
    while data:
        length = int.from_bytes(data[:4], "big")
        frames.append(data[4 : 4 + length])
        data = data[4 + length :]
    return b"".join(frames)


async def test_a_remote_gateway_carries_a_sealed_request_without_seeing_it(
    hosts: dict[str, Host], tmp_path: Path, tiny_model_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    network_dir = tmp_path / "network"
    addresses = [relay_address(hosts[name]) for name in AUTHORITIES]
    create_network(network_dir, f"sealed-{secrets.token_hex(4)}", addresses, 2, period_s=PERIOD_S, local=True)
    bootstrap = network_dir / BOOTSTRAP_FILE_NAME
    gateway_host, user = hosts["gateway"], hosts["user"]
    capture = tmp_path / "gateway-eth0.frames"
    async with AsyncExitStack() as stack:
        for index, name in enumerate(AUTHORITIES, start=1):
            await start_relay(
                stack, hosts[name], network_dir / f"authority-{index}", bootstrap, authority=True
            )
        home = await start_relay(stack, hosts["home"], tmp_path / "home", bootstrap, authority=False)
        node_args = [
            "tp_node.node_cli",
            "--home-relay",
            f"{home.announcement['node_id']}@{relay_address(hosts['home'])}",
        ]
        node_args += [
            "--data-dir",
            str(tmp_path / "node"),
            "--bootstrap",
            str(bootstrap),
            "--log-level",
            "debug",
        ]
        node_args += ["--engine", "llama", "--model", str(tiny_model_path), "--n-ctx", "2048"]
        await stack.enter_async_context(python_process(node_args, prefix=hosts["node"].prefix()))
        await stack.enter_async_context(
            python_process(["tests.reliability.netns_capture", str(capture)], prefix=gateway_host.prefix())
        )
        remote_args = ["tp_gateway.cli", "--public", "--listen", f"{gateway_host.address}:{GATEWAY_PORT}"]
        remote_args += [
            "--bootstrap",
            str(bootstrap),
            "--data-dir",
            str(tmp_path / "gateway"),
            "--log-level",
            "debug",
        ]
        remote = await stack.enter_async_context(python_process(remote_args, prefix=gateway_host.prefix()))
        local_args = ["tp_gateway.cli", "--listen", "127.0.0.1:0", "--bootstrap", str(bootstrap)]
        local_args += ["--data-dir", str(tmp_path / "local-gateway"), "--log-level", "warning"]
        local = await stack.enter_async_context(python_process(local_args, prefix=user.prefix()))
        request = [*user.prefix(), sys.executable, "-m", "tests.reliability.netns_sealed_request"]
        request += [remote.announcement["base_url"], local.announcement["base_url"], str(bootstrap), SENTINEL]
        with trio.fail_after(REQUEST_TIMEOUT_S):
            done = await trio.run_process(request, capture_stdout=True)
    outcome = json.loads(done.stdout)
    assert outcome["sealed"] and outcome["sealed"] == outcome["local"], outcome
    assert (outcome["remote_plaintext_status"], outcome["remote_plaintext_code"]) == (
        403,
        "plaintext_refused",
    )
    seen = captured_payloads(capture)
    assert b"POST /v1/sealed" in seen  # the capture did see the user's request to the gateway
    logs = capfd.readouterr().err  # every process's stderr, the remote gateway's and the node's at DEBUG
    assert "sealed" in logs or "directory" in logs
    for secret in (SENTINEL, outcome["sealed"][:40]):
        assert secret.encode() not in seen
        assert secret not in logs
