"""Large prompts through a real gateway, relays and a tiny-model node on 127.0.0.1: every size up to the
gateway's largest body crosses the overlay and gets the model's 400 (context too long); a byte more, 413.

Before the backward cells of a hop were kept in order, every request over ~63 KB failed (503 after three
nodes) instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import trio

from tests.integration.gateway_network import running_gateway
from tp_net.protocol.messages import REQUEST_BYTES_MAX

MODEL = "tiny"
TIMEOUT_S = 60.0


def _body(size: int) -> bytes:
    """A chat request of exactly `size` bytes of JSON, nearly all of it prompt."""
    request = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": ""}]}
    overhead = len(json.dumps(request).encode())
    request["messages"][0]["content"] = "a " * ((size - overhead) // 2) + "a" * ((size - overhead) % 2)
    body = json.dumps(request).encode()
    assert len(body) == size
    return body


async def test_prompts_of_every_size_reach_the_model_and_get_its_400(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    node_args = ["--engine", "llama", "--model", str(tiny_model_path), "--model-id", MODEL, "--n-ctx", "512"]
    async with running_gateway(tmp_path, node_args=node_args, relay_count=3) as running:

        def post_all() -> list[tuple[int, int, str]]:
            results = []
            with httpx.Client(base_url=running.base_url, timeout=TIMEOUT_S) as client:
                for size in (100_000, 1_000_000, REQUEST_BYTES_MAX, REQUEST_BYTES_MAX + 1):
                    reply = client.post(
                        "/chat/completions", content=_body(size), headers={"Content-Type": "application/json"}
                    )
                    results.append((size, reply.status_code, str(reply.json()["error"].get("code"))))
            return results

        results = await trio.to_thread.run_sync(post_all)
    assert results == [
        (100_000, 400, "context_length_exceeded"),
        (1_000_000, 400, "context_length_exceeded"),
        (REQUEST_BYTES_MAX, 400, "context_length_exceeded"),
        (REQUEST_BYTES_MAX + 1, 413, results[-1][2]),
    ]
