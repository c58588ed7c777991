"""The WAN figures of docs/BENCHMARKS.md, measured on the emulated WAN of test_wan.py (needs root):

    python -m tests.reliability.wan_bench [--requests N]

One network (three authority relays, a relay, the home relay, a fake-engine node, a gateway, each in its own
namespace). At 80 ms round trip between any two hosts: time to first token of streamed chat completions
through the gateway (its floor: 4 round trips, gateway to node and back, plus the node's first token) and
the time of a directory fetch from the client's namespace over a fresh link and over a kept one. Then every
host at 200 ms round trip with 1% loss per host and frame (2% per path between two hosts): how many chat
completions succeed, and the directory fetches again. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import AsyncExitStack
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
import trio

from bootstrap.new_network import BOOTSTRAP_FILE_NAME
from tests.reliability.test_faults import MESSAGES, sse_events, wait_until_requests_succeed
from tests.reliability.test_wan import ONE_WAY_MS, RELAYS, TOKEN_DELAY_MS, start_network
from tests.reliability.wan import Wan, inside, wan_hosts
from tp_net.protocol.bootstrap_config import load_bootstrap
from tp_net.trio.directory_client import KeptLinks, fetch_document
from tp_net.trio.transport_ws import WebSocketDialer

SLOW_ONE_WAY_MS = 50.0  # 200 ms round trip
SLOW_LOSS = 0.01  # per host and frame: about 2% between two hosts
LINKS_TO_NODE = 4  # gateway -> guard -> middle -> home relay -> node
FETCHES = 10
HTTP_TIMEOUT_S = 60.0


async def first_token_s(http: httpx.AsyncClient) -> float:
    body = {"model": "fake", "messages": MESSAGES, "max_tokens": 4, "stream": True}
    started = time.monotonic()
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for _event in sse_events(response):
            return time.monotonic() - started
    raise AssertionError("no event")


async def fetch_times(bootstrap: Path) -> dict[str, float]:
    """Median seconds of a directory fetch from an authority: a fresh link each time, and a kept link."""
    authority = load_bootstrap(bootstrap).authorities[0].hop()
    fresh, kept_times = [], []
    async with trio.open_nursery() as nursery:
        dialer = WebSocketDialer(nursery)
        for _ in range(FETCHES):
            started = time.monotonic()
            await fetch_document(dialer, authority)
            fresh.append(time.monotonic() - started)
        async with KeptLinks.open(dialer) as kept:
            await fetch_document(dialer, authority, kept)  # the one dial
            for _ in range(FETCHES):
                started = time.monotonic()
                await fetch_document(dialer, authority, kept)
                kept_times.append(time.monotonic() - started)
        nursery.cancel_scope.cancel()
    return {
        "fresh link median s": round(statistics.median(fresh), 3),
        "fresh link max s": round(max(fresh), 3),
        "kept link median s": round(statistics.median(kept_times), 3),
        "kept link max s": round(max(kept_times), 3),
    }


async def measure(wan: Wan, root_url: str, bootstrap: Path, requests: int) -> dict[str, Any]:
    report: dict[str, Any] = {}
    with inside(wan.hosts["client"]):
        async with httpx.AsyncClient(base_url=root_url, timeout=HTTP_TIMEOUT_S) as http:
            report["ready after s"] = round(await wait_until_requests_succeed(http), 2)
            ttft = [await first_token_s(http) for _ in range(requests)]
            floor_s = LINKS_TO_NODE * 4 * ONE_WAY_MS / 1000 + TOKEN_DELAY_MS / 1000
            report["80 ms"] = {
                "ttft median ms": round(statistics.median(ttft) * 1000),
                "ttft p90 ms": round(statistics.quantiles(ttft, n=10)[-1] * 1000),
                "ttft floor ms": round(floor_s * 1000),
                "directory fetch": await fetch_times(bootstrap),
            }
            for name in wan.hosts:
                await wan.set_link(name, SLOW_ONE_WAY_MS, 0.0, SLOW_LOSS)
            statuses = []
            durations = []
            for _ in range(requests * 3):
                started = time.monotonic()
                body = {"model": "fake", "messages": MESSAGES, "max_tokens": 8}
                try:
                    statuses.append((await http.post("/v1/chat/completions", json=body)).status_code)
                except httpx.HTTPError as exc:
                    statuses.append(type(exc).__name__)  # type: ignore[arg-type]
                durations.append(time.monotonic() - started)
            report["200 ms, 2% loss"] = {
                "succeeded": f"{statuses.count(200)}/{len(statuses)}",
                "failures": sorted({str(s) for s in statuses if s != 200}),
                "request median s": round(statistics.median(durations), 3),
                "directory fetch": await fetch_times(bootstrap),
            }
    return report


async def main_async(requests: int) -> dict[str, Any]:
    with TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        async with (
            wan_hosts([*RELAYS, "node", "client"], one_way_ms=ONE_WAY_MS) as wan,
            AsyncExitStack() as stack,
        ):
            roles = await start_network(stack, wan.hosts, tmp_path)
            root_url = roles.gateway.announcement["base_url"].removesuffix("/v1")
            return await measure(wan, root_url, tmp_path / "network" / BOOTSTRAP_FILE_NAME, requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(trio.run(main_async, args.requests)))


if __name__ == "__main__":
    main()
