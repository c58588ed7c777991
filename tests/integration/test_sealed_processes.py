"""Sealed mode with real processes: three relays, a tp-node on the tiny model, and a `tp-gateway --public`,
all at DEBUG. A sealed client (tp_gateway.sealed_client, the official OpenAI SDK through sealed_http_client,
and the bundled JS client under Node when installed, trusting the network's bootstrap file) sends a sentinel
prompt; the answer equals the plaintext route's for the same seed, and neither the prompt nor the answer
appears in any process's stdout or stderr. The SDK's text completions are sealed too (the same answer as the
plaintext route's), and its embeddings request gets the same refusal sealed as plain (the tiny model is no
embedding model)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import pytest
import trio

from tests.integration.gateway_network import running_gateway
from tests.integration.test_inference_processes import llama_node
from tp_gateway.sealed_client import SecureChatCompletion
from tp_gateway.sealed_transport import sealed_http_client

SENTINEL = "pangolin-7e02"
NODE = shutil.which("node")  # the JS client runs too where Node is installed


async def test_a_sealed_request_keeps_prompt_and_answer_from_a_public_gateway(
    tmp_path: Path, tiny_model_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    fields: dict[str, Any] = {
        "messages": [{"role": "user", "content": f"Repeat after me: {SENTINEL}"}],
        "temperature": 0,
        "max_tokens": 40,
        "seed": 11,
    }
    completion_fields: dict[str, Any] = {
        "prompt": f"Repeat after me: {SENTINEL}",
        "temperature": 0,
        "max_tokens": 24,
        "seed": 11,
    }
    node_args = llama_node(tiny_model_path, "--log-level", "debug")
    async with running_gateway(
        tmp_path, node_args=node_args, gateway_args=["--public"], log_level="debug"
    ) as running:
        model = running.model_ids[0]
        bootstrap = running.network.bootstrap_file

        def use() -> tuple[str, str, str, tuple[str, str]]:
            chat = SecureChatCompletion(running.base_url, bootstrap=bootstrap)
            try:
                sealed = cast(dict[str, Any], chat.create(model=model, **fields))
            finally:
                chat.close()
            with sealed_http_client(running.base_url, bootstrap=bootstrap) as http:
                sdk = openai.OpenAI(base_url=running.base_url, api_key="unused", http_client=cast(Any, http))
                through_sdk = sdk.chat.completions.create(model=model, **fields)
                sdk_completion = sdk.completions.create(model=model, **completion_fields)
                with pytest.raises(openai.APIStatusError) as refused:
                    sdk.embeddings.create(model=model, input=SENTINEL)
            url = f"{running.base_url}/chat/completions"
            plain = httpx.post(url, json={"model": model, **fields}, timeout=60).raise_for_status().json()
            url = f"{running.base_url}/completions"
            body = {"model": model, **completion_fields}
            plain_completion = httpx.post(url, json=body, timeout=60).raise_for_status().json()
            url = f"{running.base_url}/embeddings"
            plain_refusal = httpx.post(url, json={"model": model, "input": "hello"}, timeout=60)
            assert sdk_completion.choices[0].text == plain_completion["choices"][0]["text"]
            assert (refused.value.status_code, refused.value.code) == (
                plain_refusal.status_code,
                plain_refusal.json()["error"]["code"],
            )
            return (
                str(sealed["choices"][0]["message"]["content"]),
                str(through_sdk.choices[0].message.content),
                str(plain["choices"][0]["message"]["content"]),
                (sdk_completion.choices[0].text, str(refused.value.code)),
            )

        with trio.fail_after(120):
            sealed, through_sdk, plain, (completion, refusal) = await trio.to_thread.run_sync(use)
            if NODE is not None:
                script = [NODE, str(Path(__file__).parent / "sealed_node_client.mjs"), running.base_url]
                done = await trio.run_process(
                    [*script, str(bootstrap), json.dumps({"model": model, **fields})], capture_stdout=True
                )
                from_js = json.loads(done.stdout)
                assert from_js["content"] == from_js["streamed"] == plain, from_js
        stdout = bytes(running.gateway.stdout) + bytes(running.node.stdout)
    assert sealed == through_sdk == plain
    assert len(sealed) > 10
    assert completion and refusal
    logs = capfd.readouterr().err  # every process's stderr, at DEBUG
    assert "directory" in logs  # the gateway did log at DEBUG
    for secret in (SENTINEL, sealed[:40], completion[:40]):
        assert secret not in logs
        assert secret.encode() not in stdout
