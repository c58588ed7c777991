"""Which GPU nodes the gateway leaves alone for a while: a node whose circuits keep failing (stopped, crashed,
its home relay gone) is retried after NODE_RETRY_S_MIN, then twice as long each time up to NODE_RETRY_S_MAX,
and its failures are logged at most once per FAILURE_LOG_INTERVAL_S (with how many were not). Sans-IO: the
clock is passed in; entries exist only for nodes of the current directory."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tp_crypto.identity import short_id

log = logging.getLogger(__name__)

NODE_RETRY_S_MIN = 1.0
NODE_RETRY_S_MAX = 120.0
FAILURE_LOG_INTERVAL_S = 60.0


@dataclass
class _Down:
    failures: int
    since: float
    retry_at: float
    logged_at: float
    unlogged: int = 0


class NodeBackoff:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._down: dict[bytes, _Down] = {}

    def may_try(self, node_id: bytes) -> bool:
        down = self._down.get(node_id)
        return down is None or down.retry_at <= self._clock()

    def down_for_s(self, node_id: bytes) -> float | None:
        """How long the node has been failing (None: it is not)."""
        down = self._down.get(node_id)
        return None if down is None else self._clock() - down.since

    def failed(self, node_id: bytes, reason: str) -> None:
        now = self._clock()
        down = self._down.get(node_id)
        if down is None:
            down = self._down[node_id] = _Down(0, now, now, now - FAILURE_LOG_INTERVAL_S)
        down.failures += 1
        wait_s = min(NODE_RETRY_S_MAX, NODE_RETRY_S_MIN * 2 ** min(down.failures - 1, 32))
        down.retry_at = now + wait_s
        if now - down.logged_at < FAILURE_LOG_INTERVAL_S:
            down.unlogged += 1
            return
        unlogged = f" ({down.unlogged} more failures since the last report)" if down.unlogged else ""
        log.info(
            "node %s unreachable for %.0f s: %s%s; next try in %.0f s",
            short_id(node_id),
            now - down.since,
            reason,
            unlogged,
            wait_s,
        )
        down.logged_at, down.unlogged = now, 0

    def succeeded(self, node_id: bytes) -> None:
        down = self._down.pop(node_id, None)
        if down is not None:
            log.info("node %s reachable again after %.0f s", short_id(node_id), self._clock() - down.since)

    def keep_only(self, node_ids: Iterable[bytes]) -> None:
        """Forget nodes no longer in the directory (the table never outgrows it)."""
        keep = set(node_ids)
        self._down = {k: v for k, v in self._down.items() if k in keep}
