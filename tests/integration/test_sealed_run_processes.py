"""A run of sealed requests through real processes (three relays, a tp-node with the fake engine and response
shaping off, a tp-gateway): each builds a circuit of its own (PROTOCOL.md 8.1) through the gateway's guard,
so the run is a burst of CREATEs from one client. All of them succeed.

Before CREATE limits were per client (tp_net.protocol.rate_limits), the guard gave the gateway's one link a
20/s bucket of 64, and a run faster than that failed with "node failed (CircuitError)" once it was spent
(the benchmark's sealed row, benchmarks/sealed.py; 314 of 600 requests at ~28/s on a 2-core machine). The
run here goes as fast as SEALED_RUN_THREADS clients can; how fast it went is printed.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.integration.gateway_network import running_gateway
from tp_gateway.sealed_client import SecureChatCompletion

SEALED_RUN_REQUESTS = 300
SEALED_RUN_THREADS = 6


async def test_a_run_of_sealed_requests_through_real_processes_all_succeed(tmp_path: Path) -> None:
    node_args = ["--response-shaping", "off"]
    async with running_gateway(tmp_path, node_args=node_args) as running:
        model = running.model_ids[0]
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 4,
            "stream": True,
        }

        def run() -> tuple[list[str], float]:
            with httpx.Client(timeout=60) as http:
                chat = SecureChatCompletion(
                    running.base_url, bootstrap=running.network.bootstrap_file, http_client=http
                )

                def one(_: int) -> str | None:
                    try:
                        chunks = chat.create(**body)
                        assert not isinstance(chunks, dict)
                        return None if list(chunks) else "no chunk"
                    except Exception as exc:  # the failure's class and message, for the assertion
                        return f"{type(exc).__name__}: {exc}"

                started = time.monotonic()
                with ThreadPoolExecutor(SEALED_RUN_THREADS) as pool:
                    outcomes = list(pool.map(one, range(SEALED_RUN_REQUESTS)))
                return [o for o in outcomes if o is not None], time.monotonic() - started

        with trio.fail_after(240):
            failures, seconds = await trio.to_thread.run_sync(run)
        print(f"{SEALED_RUN_REQUESTS} sealed requests in {seconds:.1f} s")
        assert failures == [], failures[:3]
