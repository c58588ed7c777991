"""Prompts and outputs never reach a log, at any level, from our code or from llama.cpp.

Every request carries a sentinel in each place a requester can put text; Python logs are captured at DEBUG
and the process's file descriptors 1 and 2 are captured too (llama.cpp writes there from C).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.tp_node.chunk_shapes import text_of
from tp_net.protocol.inference_contract import INFERENCE_SERVICE, EngineError
from tp_net.trio.client import ClientLink
from tp_node.engine import ServingEngine
from tp_node.llama_engine import ModelConfig, open_llama_engine
from tp_node.moderation import Blocklist, ModeratedEngine
from tp_node.testing.memory_network import in_process_network

SENTINEL = "zebracorn-7c1f"
TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": f"find {SENTINEL}",
        "parameters": {
            "type": "object",
            "properties": {SENTINEL: {"type": "string"}},
            "required": [SENTINEL],
        },
    },
}
MESSAGES = [
    {"role": "system", "content": f"secret {SENTINEL}"},
    {"role": "user", "content": f"tell me about {SENTINEL}"},
]
CHAT_REQUESTS: list[dict[str, Any]] = [
    {"messages": MESSAGES, "max_tokens": 24},
    {"messages": MESSAGES, "max_tokens": 24, "stop": [SENTINEL, "e"]},
    {"messages": MESSAGES, "max_tokens": 24, "tools": [TOOL], "tool_choice": "required"},
    {
        "messages": MESSAGES,
        "max_tokens": 24,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": TOOL["function"]}},
    },
    {"kind": "completion", "prompt": f"{SENTINEL} once upon", "max_tokens": 24},
    {"messages": [{"role": "user", "content": f"{SENTINEL} " * 3000}]},  # over the context
    {"messages": MESSAGES, "temperature": 7},  # refused by validation
    {"messages": MESSAGES, "model": SENTINEL},  # unknown model
]


async def _serve_all(engine: ServingEngine, requests: list[dict[str, Any]]) -> list[str]:
    outputs = []
    for request in requests:
        try:
            chunks = [chunk async for chunk in engine.generate(request)]
        except EngineError:
            continue
        outputs.append(text_of(chunks) + "".join(str(c.get("tool_calls", "")) for c in chunks))
    return outputs


def _assert_clean(logs: str, outputs: list[str]) -> None:
    assert SENTINEL not in logs
    for output in outputs:
        if len(output) >= 16:  # short outputs are common words that appear in any log
            assert output not in logs


async def test_no_prompt_or_output_reaches_any_log(
    tiny_model_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    config = ModelConfig(tiny_model_path, n_ctx=512)
    embed_config = ModelConfig(tiny_model_path, model_id="embed", embedding=True, n_ctx=512)
    async with open_llama_engine([config, embed_config]) as engine:
        outputs = await _serve_all(
            engine, [{**r, "model": r.get("model", "tiny-llama-v1")} for r in CHAT_REQUESTS]
        )
        outputs += await _serve_all(engine, [{"kind": "embedding", "model": "embed", "input": [SENTINEL]}])
        moderated = ModeratedEngine(engine, Blocklist([SENTINEL]))
        await _serve_all(moderated, [{"messages": MESSAGES, "model": "tiny-llama-v1"}])
    captured = capfd.readouterr()
    assert len(outputs) >= 6
    _assert_clean(caplog.text + captured.out + captured.err, outputs)


async def test_the_node_logs_nothing_of_a_request_through_a_circuit(
    tiny_model_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    async with (
        open_llama_engine([ModelConfig(tiny_model_path, n_ctx=512)]) as engine,
        in_process_network(engine=engine) as net,
    ):
        hops = net.path()
        async with ClientLink.connect(net.network.dialer(), hops[0]) as link:
            circuit = await link.build_circuit(hops)
            with trio.fail_after(20):
                chunks = [c async for c in circuit.request(INFERENCE_SERVICE, CHAT_REQUESTS[0])]
                stream = await circuit.open_stream(INFERENCE_SERVICE)
                await stream.send_message({**CHAT_REQUESTS[0], "max_tokens": 400})
                stream.end()
                await stream.receive_data()
                stream.cancel()  # the reader gives up half way
    captured = capfd.readouterr()
    assert any(record.levelno == logging.DEBUG for record in caplog.records)  # the node did log
    _assert_clean(caplog.text + captured.out + captured.err, [text_of(chunks)])
