"""Every 503 that retrying will not cure says what is wrong and what to do (never "retry shortly"), and a
dead node is backed off from with bounded logging."""

from __future__ import annotations

import logging
import random

import pytest
import trio

from tp_gateway.app import api_error
from tp_gateway.node_backoff import FAILURE_LOG_INTERVAL_S, NODE_RETRY_S_MAX, NODE_RETRY_S_MIN, NodeBackoff
from tp_gateway.overlay import Overlay, OverlayError
from tp_net.protocol.bootstrap_config import Bootstrap, BootstrapAuthority
from tp_net.protocol.descriptors import ModelOffer, NodeDescriptor, RelayDescriptor
from tp_net.protocol.directory import Directory
from tp_net.trio.transport_memory import MemoryNetwork

MODEL = "tiny"
NOW = 1_800_000_000


def bootstrap(*, local: bool) -> Bootstrap:
    return Bootstrap(
        "one-host", 1, 300, (BootstrapAuthority(bytes([9]) * 32, "ws://127.0.0.1:7001/"),), local
    )


def one_host_directory() -> Directory:
    relays = {
        bytes([n]) * 32: RelayDescriptor(
            bytes([n]) * 32, f"ws://127.0.0.1:{7000 + n}/", (bytes([n]) * 32,), 10, "", "1", NOW, NOW + 600
        )
        for n in (1, 2, 3, 4)
    }
    offer = ModelOffer(MODEL, bytes(32), 10**6, "F32", 2048, 4, 0)
    node = NodeDescriptor(
        bytes([100]) * 32, (bytes([7]) * 32,), (bytes([4]) * 32,), (offer,), "1", NOW, NOW + 600
    )
    return Directory("one-host", NOW, NOW + 300, NOW + 900, relays, {node.node_id: node})


def overlay(*, local: bool, directory: Directory | None) -> Overlay:
    gateway = Overlay(bootstrap(local=local), MemoryNetwork().dialer(), rng=random.Random(1))
    if directory is not None:
        gateway.use_directory(directory)
    return gateway


async def failure(gateway: Overlay) -> OverlayError:
    with pytest.raises(OverlayError) as caught:
        async for _ in gateway.generate(MODEL, {"messages": []}):
            pass
    return caught.value


def assert_names_a_fix(error: OverlayError, code: str, fix: str) -> None:
    assert error.code == code, error
    assert fix in str(error), error
    answer = api_error(error, MODEL)
    assert answer.status == 503 and answer.code == code
    assert fix in answer.message and "retry shortly" not in answer.message


async def test_one_host_network_not_marked_local_says_to_set_local() -> None:
    error = await failure(overlay(local=False, directory=one_host_directory()))
    assert_names_a_fix(error, "no_path", '"local": true')
    assert "bootstrap.new_network" in str(error)


async def test_no_path_stays_the_reason_after_the_pool_backs_off_from_the_node() -> None:
    gateway = overlay(local=False, directory=one_host_directory())
    directory = gateway.directory
    assert directory is not None
    await gateway._warm(next(iter(directory.nodes.values())))  # the pool finds no path, backs off
    assert_names_a_fix(await failure(gateway), "no_path", '"local": true')


async def test_no_directory_yet_says_which_authorities_to_start() -> None:
    error = await failure(overlay(local=True, directory=None))
    assert_names_a_fix(error, "no_directory", "start the authorities")
    assert "1 of the 1" in str(error)


async def test_every_node_of_the_model_down_says_so_and_what_to_do(nursery: trio.Nursery) -> None:
    """The request still tries the backed-off node (a relay on its warm-up path may be what is down); when
    that fails too, the answer says the nodes are down and what to do."""
    gateway = overlay(local=True, directory=one_host_directory())
    gateway._nursery = nursery  # what Overlay.run provides: circuits are built in it (to relays not there)
    gateway._backoff.failed(bytes([100]) * 32, "test")
    error = await failure(gateway)
    assert_names_a_fix(error, "nodes_down", "start a node that serves this one")


def test_backoff_doubles_to_a_cap_and_logs_a_dead_node_at_most_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    backoff = NodeBackoff(lambda: now[0])
    node = bytes([5]) * 32
    waits = []
    with caplog.at_level(logging.INFO, logger="tp_gateway.node_backoff"):
        for _ in range(200):  # a dead node tried every time it may be, for a long while
            backoff.failed(node, "circuit refused")
            retry_at = now[0] + 0.0
            while not backoff.may_try(node):
                now[0] += 0.5
            waits.append(now[0] - retry_at)
    assert waits[0] == NODE_RETRY_S_MIN and max(waits) == NODE_RETRY_S_MAX
    reports = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(reports) <= now[0] / FAILURE_LOG_INTERVAL_S + 1
    assert any("more failures since the last report" in r.getMessage() for r in reports)
    backoff.succeeded(node)
    assert backoff.may_try(node) and backoff.down_for_s(node) is None
    backoff.failed(node, "again")
    backoff.keep_only([])
    assert backoff.may_try(node), "a node gone from the directory is forgotten"
