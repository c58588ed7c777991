"""Three tp-relay processes and a tp-node running the llama engine on the tiny model, on 127.0.0.1."""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path
from typing import Any

import llama_cpp
import pytest
import trio

from tests.tp_node.chunk_shapes import assert_well_formed, text_of
from tp_dev.local_network import local_network
from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.trio.client import Circuit, ClientLink, Stream
from tp_net.trio.transport_ws import WebSocketDialer

SENTINEL = "okapi-31d9"
N_CTX = 2048


def llama_node(model: Path, *extra: str) -> list[str]:
    return ["--engine", "llama", "--model", str(model), "--n-ctx", str(N_CTX), *extra]


def chat(content: str, max_tokens: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": max_tokens}


def direct_text(model: Path, request: dict[str, Any]) -> str:
    with closing(llama_cpp.Llama(model_path=str(model), n_ctx=N_CTX, verbose=False)) as llm:
        result = llm.create_chat_completion(
            messages=request["messages"], temperature=0, max_tokens=request["max_tokens"]
        )
    return str(result["choices"][0]["message"]["content"])


async def start(circuit: Circuit, request: dict[str, Any]) -> Stream:
    stream = await circuit.open_stream(INFERENCE_SERVICE)
    await stream.send_message(request)
    stream.end()
    return stream


async def collect(stream: Stream, first_chunk: trio.Event | None = None) -> list[dict[str, Any]]:
    chunks = []
    async for chunk in stream.messages():
        chunks.append(chunk)
        if first_chunk is not None:
            first_chunk.set()
    return chunks


async def test_a_greedy_chat_through_the_overlay_is_byte_identical_to_direct_llama_cpp(
    nursery: trio.Nursery, tmp_path: Path, tiny_model_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    request = {
        "messages": [
            {"role": "system", "content": f"The password is {SENTINEL}."},
            {"role": "user", "content": "Say hello to the world, twice!"},
        ],
        "temperature": 0,
        "max_tokens": 300,
    }
    node_args = llama_node(tiny_model_path, "--log-level", "debug")
    async with local_network(tmp_path, node_args=node_args) as network:
        path = network.path()
        async with ClientLink.connect(WebSocketDialer(nursery), path[0]) as link:
            circuit = await link.build_circuit(path)
            with trio.fail_after(60):
                chunks = [chunk async for chunk in circuit.request(INFERENCE_SERVICE, request)]
    assert_well_formed(chunks)
    assert text_of(chunks).encode("utf-8") == direct_text(tiny_model_path, request).encode("utf-8")
    assert chunks[-1]["usage"]["completion_tokens"] == 300
    logs = capfd.readouterr().err  # every process's stderr, the node's at DEBUG
    assert "link 1 up" in logs
    assert SENTINEL not in logs and text_of(chunks)[:80] not in logs


async def test_two_slots_serve_eight_requests_refuse_a_ninth_and_a_cancel_frees_a_slot(
    nursery: trio.Nursery, tmp_path: Path, tiny_model_path: Path
) -> None:
    prompts = [f"tell me about relay {n}" for n in range(4)]
    requests = [chat(prompt, 300) for prompt in prompts for _ in range(2)]
    async with local_network(
        tmp_path, node_args=llama_node(tiny_model_path, "--slots", "2", "--queue", "6")
    ) as net:
        path = net.path()
        async with ClientLink.connect(WebSocketDialer(nursery), path[0]) as link:
            circuit = await link.build_circuit(path)
            with trio.fail_after(120):
                results, refused = await _eight_and_one_too_many(circuit, requests)
                freed_s = await _cancel_frees_a_slot(circuit)
    assert refused[0]["error"]["code"] == "overloaded", refused
    for chunks in results:
        assert_well_formed(chunks)
    expected = {prompt: direct_text(tiny_model_path, chat(prompt, 300)) for prompt in prompts}
    assert [text_of(chunks) for chunks in results] == [expected[p] for p in prompts for _ in range(2)]
    print(f"a cancelled stream's slot served the next request {freed_s * 1000:.1f} ms after the cancel")


async def _eight_and_one_too_many(
    circuit: Circuit, requests: list[dict[str, Any]]
) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    streams = [await start(circuit, request) for request in requests]
    results: list[list[dict[str, Any]]] = [[] for _ in streams]
    started = [trio.Event() for _ in streams]
    two_generating = trio.Event()

    async def read(index: int) -> None:
        async with trio.open_nursery() as watch:
            watch.start_soon(collect_into, index)
            await started[index].wait()
            if sum(event.is_set() for event in started) >= 2:
                two_generating.set()

    async def collect_into(index: int) -> None:
        results[index] = await collect(streams[index], started[index])

    async with trio.open_nursery() as readers:
        for index in range(len(streams)):
            readers.start_soon(read, index)
        await two_generating.wait()  # both slots generate; the six others were sent before and wait
        await trio.sleep(0.05)
        refused = await collect(await start(circuit, chat("one too many", 5)))
    return results, refused


async def _cancel_frees_a_slot(circuit: Circuit) -> float:
    """Two long requests fill both slots; cancel one; a queued request gets the freed slot at once."""
    long_streams = [await start(circuit, chat(f"go on {n}", 1800)) for n in range(2)]
    for stream in long_streams:
        await stream.receive_data()  # generating
    cancelled_at = time.perf_counter()
    long_streams[0].cancel()
    quick = await collect(await start(circuit, chat("quick", 3)))
    freed_s = time.perf_counter() - cancelled_at
    long_streams[1].cancel()
    assert_well_formed(quick)
    # Without the cancel, the quick request would wait for a ~1800-token generation (seconds here).
    assert freed_s < 1.0
    return freed_s
