"""A GPU node's home relays, chosen from the signed directory when no `--home-relay` is given.

`HOME_RELAYS_WANTED` relays, capacity-weighted and diverse (no two in one /16 or declared family, where the
directory offers a choice: tp_net.protocol.path_selection.keep_and_top_up, the one home of that rule). At each
new directory document the node keeps the chosen relays it still lists and replaces those that left. The node
links to them (GpuNode.use_home_relays) and its descriptor names them (the `hops` list, shared with the
publisher, is updated in place). The documents come over one link per authority kept between rounds
(KeptLinks, as relays refresh theirs), never older than the one held (NewestDocument).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import trio

from tp_crypto.identity import short_id
from tp_net.protocol.bootstrap_config import Bootstrap
from tp_net.protocol.circuit_client import HopInfo
from tp_net.protocol.directory import NewestDocument
from tp_net.protocol.errors import TokenPlaceError
from tp_net.protocol.path_selection import LOCAL_NETWORK_RULES, STRICT_RULES, keep_and_top_up
from tp_net.trio.directory_client import KeptLinks, fetch_directory
from tp_net.trio.transport import Dialer
from tp_node.directory_duties import DOCUMENT_RETRY_S, refresh_delay_s
from tp_node.gpu_node import GpuNode, HomeRelay

log = logging.getLogger(__name__)

HOME_RELAYS_WANTED = 2  # a node keeps links to this many relays (fewer only while the directory lists fewer)


async def keep_home_relays(
    node: GpuNode,
    bootstrap: Bootstrap,
    dialer: Dialer,
    hops: list[HopInfo],
    rng: random.Random,
    *,
    wall_clock: Callable[[], float] = time.time,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Choose home relays from each directory document, until cancelled; started once some are chosen."""
    sources = [authority.hop() for authority in bootstrap.authorities]
    rules = LOCAL_NETWORK_RULES if bootstrap.local else STRICT_RULES
    trust = bootstrap.trust()
    held = NewestDocument(trust)
    started = False
    async with KeptLinks.open(dialer) as links:
        while True:
            try:
                directory, _ = await fetch_directory(
                    dialer, sources, trust, rng, wall_clock(), kept=links, held=held
                )
            except TokenPlaceError as exc:
                log.info("no directory to choose home relays from yet: %s", exc.__class__.__name__)
                await trio.sleep(DOCUMENT_RETRY_S)
                continue
            kept = [relay.node_id for relay in node.home_relays]
            chosen = keep_and_top_up(
                kept,
                list(directory.relays.values()),
                rng,
                count=HOME_RELAYS_WANTED,
                rules=rules,
                weights=directory.weights,
            )
            if not chosen:
                log.info("the directory lists no relay yet")
                await trio.sleep(DOCUMENT_RETRY_S)
                continue
            relays = [HomeRelay(node_id, directory.relays[node_id].address) for node_id in chosen]
            if chosen != kept:
                log.info("home relays: %s", ", ".join(f"{short_id(r.node_id)} {r.address}" for r in relays))
            node.use_home_relays(relays)
            hops[:] = [HopInfo(relay.node_id, None, relay.address) for relay in relays]
            if not started:
                task_status.started()
                started = True
            short = len(chosen) < HOME_RELAYS_WANTED
            delay = refresh_delay_s(directory.valid_after, bootstrap, wall_clock())
            await trio.sleep(DOCUMENT_RETRY_S if short else delay)
