"""Privacy across every process: prompts and answers never reach a log, and errors name no internal address.

A gateway, three relays (the authorities) and a fake-engine node all run at DEBUG. Every byte each of them
writes is searched: stderr (inherited, captured at the file-descriptor level) and stdout (read by
tp_dev.processes from the announcement on, until the process has exited). Requests carry a sentinel in
every field a client can fill (chat, completion and embedding requests, valid and invalid); no
WINDOW_CHARS-character window of the sentinel or of any answer's text may appear in any process's output
(less the pieces that the product's source itself contains: the fake answers are made of common words).
Every error a client gets (bad requests, an unknown model, a node killed mid-stream and the requests after
it) must not contain a relay's or the node's address, port or node id.

The node alone, with the llama engine and llama.cpp's own output, is tests/tp_node/test_privacy.py.
"""

from __future__ import annotations

import json
import os
import signal
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.integration.gateway_network import RunningGateway, running_gateway

SENTINEL = "quokkaprompt-51e9"
# A leak of any piece this long of a prompt or an answer fails the test.
WINDOW_CHARS = 12
# The fake engine's answers are made of words the product uses ("relay", "circuit"...): a piece of an answer
# that the product's own source code contains (e.g. "a circuit to", from a log message) is not a leak.
PRODUCT_SOURCES = ("tp_crypto", "tp_net", "tp_node", "tp_gateway", "bootstrap")
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 30.0
ANSWER_TOKENS = 24
TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": f"look up {SENTINEL}",
        "parameters": {"type": "object", "properties": {SENTINEL: {"type": "string"}}},
    },
}
CHAT = {
    "model": "fake",
    "messages": [
        {"role": "system", "content": f"system {SENTINEL}"},
        {"role": "user", "content": f"user {SENTINEL}", "name": "someone"},
        {"role": "assistant", "content": [{"type": "text", "text": f"part {SENTINEL}"}]},
        {"role": "user", "content": f"again {SENTINEL}"},
    ],
    "max_tokens": ANSWER_TOKENS,
    "stop": [f"{SENTINEL}-stop"],
    "user": SENTINEL,
    "tools": [TOOL],
}
VALID_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("/v1/chat/completions", CHAT),
    ("/v1/chat/completions", {**CHAT, "stream": True}),
    ("/v1/chat/completions", {**CHAT, SENTINEL: SENTINEL}),  # unknown fields are ignored, as OpenAI does
    ("/v1/completions", {"model": "fake", "prompt": f"prompt {SENTINEL}", "max_tokens": ANSWER_TOKENS}),
    ("/v1/embeddings", {"model": "fake", "input": [f"input {SENTINEL}"]}),
]
INVALID_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("/v1/chat/completions", {**CHAT, "temperature": SENTINEL}),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": SENTINEL, "content": SENTINEL}]}),
    ("/v1/chat/completions", {**CHAT, "model": f"no-such-model-{SENTINEL}"}),
    ("/v1/completions", {"model": "fake", "prompt": [SENTINEL, 7]}),
    ("/v1/embeddings", {"model": "fake", "input": {SENTINEL: 1}}),
]


def answer_text(response: httpx.Response) -> str:
    """The generated text of a chat or completion answer, streamed or not."""
    if not response.headers["content-type"].startswith("text/event-stream"):
        choice = response.json()["choices"][0]
        return str(choice.get("text") or choice["message"].get("content") or "")
    text = ""
    for line in response.text.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                text += choice.get("delta", {}).get("content") or ""
    return text


def internal_names(running: RunningGateway) -> list[str]:
    """What a client's error must never contain: addresses, ports and ids of relays and the node."""
    names = []
    for process in [*running.network.relays, running.node]:
        announcement = process.announcement
        names.append(announcement["node_id"])
        names.append(announcement["node_id"][:8])  # short ids, as logs write them
        if "address" in announcement:
            names.append(announcement["address"])
            names.append(":" + announcement["address"].rsplit(":", 1)[1].rstrip("/"))
    return [*names, "127.0.0.1", "ws://"]


def windows(text: str) -> set[str]:
    """Every WINDOW_CHARS-character piece of `text` (the whole text when shorter)."""
    return {text[i : i + WINDOW_CHARS] for i in range(max(1, len(text) - WINDOW_CHARS + 1))}


@cache
def product_source() -> str:
    return "\n".join(path.read_text() for name in PRODUCT_SOURCES for path in (ROOT / name).rglob("*.py"))


def leaked_pieces(secret: str, output: str, *, innocent: str = "") -> list[str]:
    """The pieces of `secret` found in `output`, less those that `innocent` text contains too."""
    return sorted(piece for piece in windows(secret) if piece in output and piece not in innocent)


async def errors_after_killing_the_node(http: httpx.AsyncClient, running: RunningGateway) -> list[str]:
    """The error event of a stream whose node dies, and the error bodies of requests after it."""
    body = {**CHAT, "max_tokens": 2000, "stream": True}
    errors = []
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        killed = False
        async for line in response.aiter_lines():
            if not killed and line.startswith("data: "):
                os.kill(running.node.process.pid, signal.SIGKILL)
                killed = True
            elif '"error"' in line:
                errors.append(line)
    for _ in range(2):
        errors.append((await http.post("/v1/chat/completions", json=CHAT)).text)
    return errors


async def test_no_process_logs_a_prompt_or_an_answer_and_no_error_names_an_internal_address(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    node_args = ["--fake-token-delay-ms", "2"]
    answers = []
    client_errors = []
    async with running_gateway(tmp_path, node_args=node_args, relay_count=3, log_level="debug") as running:
        async with httpx.AsyncClient(base_url=running.root_url, timeout=TIMEOUT_S) as http:
            for route, body in VALID_REQUESTS:
                response = await http.post(route, json=body)
                assert response.status_code == 200, response.text
                if "embeddings" not in route:
                    answers.append(answer_text(response))
            for route, body in INVALID_REQUESTS:
                response = await http.post(route, json=body)
                assert 400 <= response.status_code < 500, response.text
                client_errors.append(response.text)
            with trio.fail_after(TIMEOUT_S):
                client_errors += await errors_after_killing_the_node(http, running)
            forbidden = internal_names(running)
        processes = [*running.network.relays, running.node, running.gateway]
    stdout = "".join(process.stdout.decode(errors="replace") for process in processes)
    assert all(process.stdout_closed.is_set() for process in processes)
    output = capfd.readouterr()
    logs = output.out + output.err + stdout
    assert " DEBUG " in logs and "tp_gateway" in logs and "tp_node" in logs  # the capture caught them
    assert stdout.count('{"') >= len(processes)  # every announcement: stdout was read
    assert not leaked_pieces(SENTINEL, logs)
    for answer in answers:
        assert len(answer.split()) >= 8, answers
        assert not leaked_pieces(answer.strip(), logs, innocent=product_source()), answer
    assert any('"error"' in error for error in client_errors[-3:]), client_errors
    for error in client_errors:
        leaked = [name for name in forbidden if name in error]
        assert not leaked, (leaked, error)
