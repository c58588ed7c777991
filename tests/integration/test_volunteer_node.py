"""The acceptance run of a volunteer: `tp-node --model tiny-test --bootstrap FILE` and no other flag (the
catalogue entry is served by a local fake Hugging Face Hub through huggingface_hub, HF_ENDPOINT pointing at
it) joins a running local network, choosing its two home relays from the directory, and answers a chat
completion through the gateway."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import trio

from tests.integration.gateway_network import running_gateway
from tests.tp_node.fake_hub import FakeHub, serve_fake_hub
from tp_dev.processes import python_process
from tp_node.models import load_catalogue

CATALOGUE_ID = "tiny-test"
ANSWER_TIMEOUT_S = 60.0


def volunteer_environment(tmp_path: Path, endpoint: str) -> dict[str, str]:
    """A fresh user's home: nothing cached, no key yet; the Hub is the local fake."""
    return {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(tmp_path / "hf-home"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }


def wait_for_answer(base_url: str) -> dict[str, object]:
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    with httpx.Client(base_url=base_url, timeout=30) as client:
        while time.monotonic() < deadline:
            models = [m["id"] for m in client.get("/models").raise_for_status().json()["data"]]
            if CATALOGUE_ID in models:
                body = {
                    "model": CATALOGUE_ID,
                    "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 8,
                }
                response = client.post("/chat/completions", json=body)
                if response.status_code == 200:
                    return dict(response.json())
            time.sleep(0.3)
    raise TimeoutError(f"no answer from {CATALOGUE_ID} through the gateway within {ANSWER_TIMEOUT_S} s")


def node_status(environment: dict[str, str]) -> dict[str, object]:
    command = [sys.executable, "-m", "tp_node.node_cli", "status", "--json"]
    result = subprocess.run(
        command, env={**os.environ, **environment}, capture_output=True, text=True, timeout=30, check=True
    )
    return dict(json.loads(result.stdout))


async def test_one_flag_and_a_bootstrap_file_serve_a_catalogue_model(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    entry = load_catalogue()[CATALOGUE_ID]
    hub = FakeHub()
    hub.add(entry.hub, tiny_model_path.read_bytes())
    with serve_fake_hub(hub):
        async with running_gateway(tmp_path / "network") as running:
            environment = volunteer_environment(tmp_path / "volunteer", hub.endpoint)
            prefix = ["env", *(f"{name}={value}" for name, value in environment.items())]
            bootstrap = str(running.network.bootstrap_file)
            command = ["tp_node.node_cli", "--model", CATALOGUE_ID, "--bootstrap", bootstrap]
            async with python_process(command, prefix=prefix):
                answer = await trio.to_thread.run_sync(wait_for_answer, running.base_url)
                status = await trio.to_thread.run_sync(node_status, environment)
    assert answer["model"] == CATALOGUE_ID
    assert answer["choices"][0]["message"]["content"]  # type: ignore[index]
    assert hub.gets() == [None]  # pulled once, through the resolve URL of the pinned revision
    assert status["links"]["count"] == 2  # type: ignore[index]  # two home relays, chosen from the directory
    (model,) = status["models"]  # type: ignore[misc]
    assert model["id"] == CATALOGUE_ID
