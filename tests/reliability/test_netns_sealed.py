"""Sealed requests through a gateway on another machine (Linux network namespaces, root; issue 19's
acceptance): the authorities, the home relay, the GPU node (tiny llama model), a `tp-gateway --public` and the
user each in their own namespace, and a packet capture of the gateway host's interface (its HTTP port and
everything it forwards).

- The user's Python client (tp_gateway.sealed_client) gets the same answer through the remote gateway as the
  same request through the user's own local gateway; the remote gateway refuses the user's plaintext.
- The remote gateway's chat page, in headless Chromium in the user's namespace, seals its prompt to the node
  and gets an answer (skipped without chromium or Playwright, a failure with TP_REQUIRE_BROWSER=1).

In both, neither the prompt nor the answer is in the capture or in any process's logs at DEBUG.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from bootstrap.new_network import BOOTSTRAP_FILE_NAME, create_network
from tests.integration.test_browser_chat import REQUIRE_ENV as REQUIRE_BROWSER_ENV
from tests.integration.test_browser_chat import missing_browser
from tests.reliability import netns
from tests.reliability.netns import Host
from tests.reliability.test_netns import AUTHORITIES, relay_address, require_netns, start_relay
from tests.required import skip_unless_required
from tp_dev.processes import python_process

pytestmark = pytest.mark.netns

GATEWAY_PORT = 8000
# Longer than test_netns.py's 4 s: a document then stays valid through a few late votes on a loaded machine
# (with 4 s the sealed client once got an expired directory: votes arrived after their window closed).
PERIOD_S = 20
SENTINEL = "armadillo-4c2f"
BROWSER_SENTINEL = "pangolin-9e1a"
REQUEST_TIMEOUT_S = 150.0
BROWSER_TIMEOUT_S = 240.0


@pytest.fixture
def hosts() -> Iterator[dict[str, Host]]:
    require_netns()
    with netns.closing_hosts([*AUTHORITIES, "home", "node", "gateway", "user"]) as made:
        yield made


@dataclass(frozen=True)
class SealedNetwork:
    remote_url: str  # the public gateway's API, http://10.x.0.1:8000/v1
    local_url: str | None  # the user's own gateway, on the user's loopback (when asked for)
    bootstrap: Path
    capture: Path  # every frame on the gateway host's eth0 (tests.reliability.netns_capture)


@asynccontextmanager
async def sealed_network(
    hosts: dict[str, Host], tmp_path: Path, tiny_model_path: Path, *, local_gateway: bool
) -> AsyncIterator[SealedNetwork]:
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
        local_url = None
        if local_gateway:
            # Once the network has a directory: a gateway announces itself after at most 30 s waiting for one,
            # as long as a process may take to start (tp_dev.processes), so on a loaded machine a local
            # gateway started while the authorities still vote never gets to announce itself in time.
            wait = [*user.prefix(), sys.executable, "-m", "tests.reliability.netns_sealed_request", "--wait"]
            with trio.fail_after(REQUEST_TIMEOUT_S):
                await trio.run_process([*wait, remote.announcement["base_url"]])
            local_args = ["tp_gateway.cli", "--listen", "127.0.0.1:0", "--bootstrap", str(bootstrap)]
            local_args += ["--data-dir", str(tmp_path / "local-gateway"), "--log-level", "warning"]
            local = await stack.enter_async_context(python_process(local_args, prefix=user.prefix()))
            local_url = local.announcement["base_url"]
        yield SealedNetwork(remote.announcement["base_url"], local_url, bootstrap, capture)


def captured_payloads(path: Path) -> bytes:
    data, frames = path.read_bytes(), []
    while data:
        length = int.from_bytes(data[:4], "big")
        frames.append(data[4 : 4 + length])
        data = data[4 + length :]
    return b"".join(frames)


def assert_unseen(secrets_: list[str], capture: Path, logs: str) -> None:
    """The capture saw the user's sealed POST, and neither it nor any process's logs hold a secret."""
    seen = captured_payloads(capture)
    assert b"POST /v1/sealed" in seen  # the capture did see the user's request to the gateway
    assert "sealed" in logs or "directory" in logs
    for secret in secrets_:
        assert secret.encode() not in seen
        assert secret not in logs


async def test_a_remote_gateway_carries_a_sealed_request_without_seeing_it(
    hosts: dict[str, Host], tmp_path: Path, tiny_model_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    async with sealed_network(hosts, tmp_path, tiny_model_path, local_gateway=True) as network:
        assert network.local_url is not None
        request = [*hosts["user"].prefix(), sys.executable, "-m", "tests.reliability.netns_sealed_request"]
        request += [network.remote_url, network.local_url, str(network.bootstrap), SENTINEL]
        with trio.fail_after(REQUEST_TIMEOUT_S):
            done = await trio.run_process(request, capture_stdout=True)
    outcome = json.loads(done.stdout)
    assert outcome["sealed"] and outcome["sealed"] == outcome["local"], outcome
    assert (outcome["remote_plaintext_status"], outcome["remote_plaintext_code"]) == (
        403,
        "plaintext_refused",
    )
    logs = capfd.readouterr().err  # every process's stderr, the remote gateway's and the node's at DEBUG
    assert_unseen([SENTINEL, outcome["sealed"][:40]], network.capture, logs)


async def test_a_browser_seals_through_a_remote_gateway(
    hosts: dict[str, Host], tmp_path: Path, tiny_model_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    reason = missing_browser()
    if reason is not None:
        skip_unless_required(REQUIRE_BROWSER_ENV, reason)
    prompt = f"The password is {BROWSER_SENTINEL}."
    async with sealed_network(hosts, tmp_path, tiny_model_path, local_gateway=False) as network:
        root_url = network.remote_url.removesuffix("/v1")
        browse = [*hosts["user"].prefix(), sys.executable, "-m", "tests.reliability.netns_browser_sealed"]
        browse += [root_url, prompt, str(tmp_path / "profile")]
        with trio.fail_after(BROWSER_TIMEOUT_S):
            done = await trio.run_process(browse, capture_stdout=True)
    outcome = json.loads(done.stdout)
    assert outcome["answer"], outcome  # the tiny model always says something
    assert "GGUF sha256" in outcome["mode"], outcome
    assert [url.removeprefix(root_url) for url in outcome["posts"]] == ["/v1/sealed"], outcome
    assert not outcome["prompt_in_a_post"]
    logs = capfd.readouterr().err
    assert_unseen([BROWSER_SENTINEL, outcome["answer"][:40]], network.capture, logs)
