"""A network spread over Linux network namespaces (needs root; CI runs it as root).

Each authority relay, the home relay, the GPU node and the client (a gateway) runs in its own namespace
with its own address on a bridge (tests/reliability/netns.py), with strict path rules (no two relays of a
circuit in one /16). A chat completion through the gateway succeeds; read with `ss -tn` in each relay's
namespace every 0.2 s from the gateway's start to the answer, no relay ever had both the client's and the
node's address among its peers; and no process
listens on a wildcard address (`ss -ltn`), since none was configured to.
"""

from __future__ import annotations

import json
import os
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
from tests.required import outcome_of, skip_unless_required
from tp_dev.processes import StartedProcess, python_process

pytestmark = pytest.mark.netns

AUTHORITIES = ("auth1", "auth2", "auth3")
RELAY_PORT = 7000
PERIOD_S = 4
REQUEST_TIMEOUT_S = 90.0
PEER_SAMPLE_INTERVAL_S = 0.2
WILDCARDS = {"0.0.0.0", "*", "[::]"}


# CI (.ci/run) sets it to 1: then a machine that cannot make namespaces fails the test instead of skipping it.
REQUIRE_ENV = "TP_REQUIRE_NETNS"


def require_netns() -> None:
    """Return when namespaces can be made here; skip (or, with TP_REQUIRE_NETNS=1, fail) with why not."""
    reason = netns.netns_unavailable_reason()
    if reason is not None:
        skip_unless_required(REQUIRE_ENV, reason)


@pytest.fixture
def hosts() -> Iterator[dict[str, Host]]:
    require_netns()
    with netns.closing_hosts([*AUTHORITIES, "home", "node", "client"]) as made:
        yield made


def relay_address(host: Host) -> str:
    return f"ws://{host.address}:{RELAY_PORT}/"


async def start_relay(
    stack: AsyncExitStack, host: Host, data_dir: Path, bootstrap: Path, *, authority: bool
) -> StartedProcess:
    args = ["tp_node.relay_cli", "--listen", f"{host.address}:{RELAY_PORT}", "--data-dir", str(data_dir)]
    args += ["--bootstrap", str(bootstrap), "--log-level", "warning", *(["--authority"] if authority else [])]
    return await stack.enter_async_context(python_process(args, prefix=host.prefix()))


async def sample_once(relays: list[Host], peers: dict[str, set[str]]) -> None:
    for host in relays:
        peers[host.namespace] |= await trio.to_thread.run_sync(netns.tcp_peers, host)


async def sample_peers(relays: list[Host], peers: dict[str, set[str]]) -> None:
    """Every relay's TCP peers, sampled until cancelled (connections come and go: directory fetches)."""
    while True:
        await sample_once(relays, peers)
        await trio.sleep(PEER_SAMPLE_INTERVAL_S)


async def test_no_relay_sees_both_the_client_and_the_node(hosts: dict[str, Host], tmp_path: Path) -> None:
    network_dir = tmp_path / "network"
    addresses = [relay_address(hosts[name]) for name in AUTHORITIES]
    # `local`: the hosts have private addresses (10.N.0.1), which relays of a public network never extend to
    # (tp_net.protocol.extend_policy); each relay is in its own /16, so paths are chosen as in a public
    # network.
    create_network(network_dir, f"netns-{secrets.token_hex(4)}", addresses, 2, period_s=PERIOD_S, local=True)
    bootstrap = network_dir / BOOTSTRAP_FILE_NAME
    client, node_host = hosts["client"], hosts["node"]
    async with AsyncExitStack() as stack:
        for index, name in enumerate(AUTHORITIES, start=1):
            await start_relay(
                stack, hosts[name], network_dir / f"authority-{index}", bootstrap, authority=True
            )
        home = await start_relay(stack, hosts["home"], tmp_path / "home", bootstrap, authority=False)
        home_relay = f"{home.announcement['node_id']}@{relay_address(hosts['home'])}"
        node_args = ["tp_node.node_cli", "--home-relay", home_relay, "--data-dir", str(tmp_path / "node")]
        node_args += ["--engine", "fake"]
        node_args += ["--bootstrap", str(bootstrap), "--log-level", "warning"]
        await stack.enter_async_context(python_process(node_args, prefix=node_host.prefix()))
        gateway_args = ["tp_gateway.cli", "--listen", "127.0.0.1:0", "--bootstrap", str(bootstrap)]
        gateway_args += ["--data-dir", str(tmp_path / "gateway"), "--log-level", "warning"]
        gateway = await stack.enter_async_context(python_process(gateway_args, prefix=client.prefix()))
        relays = [hosts[name] for name in (*AUTHORITIES, "home")]
        peers: dict[str, set[str]] = {host.namespace: set() for host in relays}
        request = [*client.prefix(), sys.executable, "-m", "tests.reliability.netns_request"]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample_peers, relays, peers)
            with trio.fail_after(REQUEST_TIMEOUT_S):
                done = await trio.run_process(
                    [*request, gateway.announcement["base_url"]], capture_stdout=True
                )
            nursery.cancel_scope.cancel()
        await sample_once(relays, peers)
        answer = json.loads(done.stdout)
        assert answer["status"] == 200, answer
        assert answer["body"]["choices"][0]["message"]["content"], answer
        print(
            json.dumps(
                {"client": client.address, "node": node_host.address, "relay peers": peers}, default=sorted
            )
        )
        for host in relays:
            assert not {client.address, node_host.address} <= peers[host.namespace], peers
        assert any(client.address in seen for seen in peers.values()), peers  # the guard sees the client
        assert node_host.address in peers[hosts["home"].namespace], peers  # the home relay sees the node
        for host in hosts.values():
            assert not netns.listening_addresses(host) & WILDCARDS, host


def test_without_root_the_skip_reason_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    reason = netns.netns_unavailable_reason()
    assert reason is not None and reason.startswith("network namespaces need root")


def test_without_root_the_test_skips_or_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    kind, message = outcome_of(require_netns)
    assert kind == "skipped" and "need root" in message, message
    monkeypatch.setenv(REQUIRE_ENV, "1")
    kind, message = outcome_of(require_netns)
    assert kind == "failed" and f"{REQUIRE_ENV}=1 but network namespaces need root" in message, message
