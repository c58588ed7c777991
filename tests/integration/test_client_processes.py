"""The in-process client against a real network: relay and tp-node processes (the network of
tests/integration/gateway_network.py, tiny llama model) and no gateway process; the official OpenAI SDK runs
in this test process with `http_client=tp_gateway.client.http_client(bootstrap=...)`, sync and async,
streamed and not.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio
from openai import AsyncOpenAI, OpenAI

from tp_dev.local_network import LocalNetwork, local_network
from tp_gateway.client import BASE_URL, async_http_client, http_client

MODEL = "tiny"
README_BOOTSTRAP = "tp-demo-state/network/bootstrap.json"
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello to the relays, twice!"}]
MAX_TOKENS = 24
WARM_TIMEOUT_S = 60.0
CLIENT_TIMEOUT_S = 30.0


class BackgroundNetwork:
    """tp_dev.local_network's processes, run by a trio loop on a background thread for a whole module."""

    def __init__(self, data_dir: Path, node_args: list[str]) -> None:
        self._data_dir, self._node_args = data_dir, node_args
        self._up = threading.Event()
        self._stop = threading.Event()
        self.network: LocalNetwork | None = None
        self._thread = threading.Thread(target=lambda: trio.run(self._main), name="client-test-network")

    def start(self) -> LocalNetwork:
        self._thread.start()
        self._up.wait()
        if self.network is None:
            self._thread.join()
            raise RuntimeError("the network did not start")
        return self.network

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    async def _main(self) -> None:
        try:
            async with local_network(self._data_dir, node_args=self._node_args, log_level="warning") as net:
                self.network = net
                self._up.set()
                await trio.to_thread.run_sync(self._stop.wait)
        finally:
            self._up.set()


@pytest.fixture(scope="module")
def network(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    node_args = ["--engine", "llama", "--model", str(tiny_model_path), "--model-id", MODEL, "--n-ctx", "2048"]
    background = BackgroundNetwork(tmp_path_factory.mktemp("client-network"), node_args)
    try:
        started = background.start()
        with http_client(bootstrap=started.bootstrap_file, data_dir=None) as probe:
            wait_until_warm(probe)  # the signed directory names the node and a path to it can be built
        yield started
    finally:
        background.close()


def wait_until_warm(client: httpx.Client) -> None:
    """Until the in-process gateway lists the model and holds a built circuit (a starting network's first
    directory may lack a relay that a path needs)."""
    deadline = time.monotonic() + WARM_TIMEOUT_S
    while time.monotonic() < deadline:
        health = client.get("/health").json()
        if health.get("models") and health.get("pooled_circuits"):
            return
        time.sleep(0.2)
    raise TimeoutError(f"the in-process client had no warm circuit within {WARM_TIMEOUT_S} s")


def client_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "token-place-client"]


async def test_sync_sdk_in_process_streams_and_not(network: LocalNetwork, tmp_path: Path) -> None:
    def use() -> tuple[list[str], str | None, str]:
        http = http_client(bootstrap=network.bootstrap_file, data_dir=tmp_path / "client")
        wait_until_warm(http)
        with OpenAI(
            base_url=BASE_URL, api_key="unused", http_client=http, max_retries=0, timeout=CLIENT_TIMEOUT_S
        ) as client:
            models = [model.id for model in client.models.list().data]
            whole = client.chat.completions.create(
                model=MODEL, messages=MESSAGES, temperature=0, max_tokens=MAX_TOKENS
            )
            with client.chat.completions.create(
                model=MODEL, messages=MESSAGES, temperature=0, max_tokens=MAX_TOKENS, stream=True
            ) as stream:
                text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
            return models, whole.choices[0].message.content, text

    models, whole, streamed = await trio.to_thread.run_sync(use)
    assert models == [MODEL]
    assert whole, "the tiny model always says something"
    assert streamed.encode() == whole.encode(), "greedy: the stream is byte-identical to the whole answer"
    assert (tmp_path / "client" / "guards.json").is_file(), "the guards are kept for the next run"
    assert not client_threads()


async def test_async_sdk_in_process_streams_and_not_and_names_a_missing_model(
    network: LocalNetwork, tmp_path: Path
) -> None:
    async def use() -> tuple[str | None, str, openai.NotFoundError]:
        http = async_http_client(bootstrap=network.bootstrap_file, data_dir=None)
        async with AsyncOpenAI(
            base_url=BASE_URL, api_key="unused", http_client=http, max_retries=0, timeout=CLIENT_TIMEOUT_S
        ) as client:
            await _wait_until_warm_async(http)
            whole = await client.completions.create(
                model=MODEL, prompt="The relays", temperature=0, max_tokens=16
            )
            stream = await client.completions.create(
                model=MODEL, prompt="The relays", temperature=0, max_tokens=16, stream=True
            )
            async with stream:
                text = "".join([chunk.choices[0].text async for chunk in stream if chunk.choices])
            with pytest.raises(openai.NotFoundError) as missing:
                await client.chat.completions.create(model="no-such-model", messages=MESSAGES)
        return whole.choices[0].text, text, missing.value

    whole, streamed, missing = await trio.to_thread.run_sync(lambda: asyncio.run(use()))
    assert whole and streamed == whole
    assert missing.code == "model_not_found" and "no-such-model" in missing.message
    assert not client_threads()


async def _wait_until_warm_async(client: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + WARM_TIMEOUT_S
    while time.monotonic() < deadline:
        health = (await client.get("/health")).json()
        if health.get("models") and health.get("pooled_circuits"):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the in-process client had no warm circuit within {WARM_TIMEOUT_S} s")


async def test_the_readme_snippet_streams_an_answer(network: LocalNetwork) -> None:
    """The README's in-process example as written, the demo's bootstrap path swapped for this network's."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    blocks = [block.split("```", 1)[0] for block in readme.split("```python\n")[1:]]
    [snippet] = [block for block in blocks if "tp_gateway.client import http_client" in block]
    assert README_BOOTSTRAP in snippet
    code = snippet.replace(README_BOOTSTRAP, str(network.bootstrap_file))
    printed = io.StringIO()

    def run() -> None:
        with contextlib.redirect_stdout(printed):
            exec(compile(code, "README.md", "exec"), {})

    await trio.to_thread.run_sync(run)
    assert printed.getvalue().strip(), "the tiny model always says something"
    assert not client_threads(), "the snippet closes its client"
