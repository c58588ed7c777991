"""tp-demo: a whole token.place network on 127.0.0.1, and the OpenAI-compatible gateway in front of it.

Starts, as separate processes: 3 relays that are the 2-of-3 authorities of a fresh local network, 2 more
relays, 1 GPU node (the tiny generated model, or --model PATH), and the gateway. Prints the base URL and an
OpenAI SDK snippet; with --once it sends one chat completion through the network, prints the answer and
exits. Ctrl-C stops every process. Keys and the bootstrap file live in --state-dir (recreated each run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from tp_cli.common import EXIT_FAILURE, host_port
from tp_cli.launch import run_until_signalled, setup_logging
from tp_dev.local_network import local_network
from tp_dev.processes import python_process

DEMO_STATE_DIR = Path("tp-demo-state")
DEMO_READY_TIMEOUT_S = 90.0
ANSWER_TIMEOUT_S = 60.0
DEMO_PROMPT = "Say hello to token.place."


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tp-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, default=DEMO_STATE_DIR, help="(default: %(default)s)")
    parser.add_argument("--model", type=Path, help="a GGUF to serve (default: the tiny generated model)")
    parser.add_argument("--gateway", type=host_port, default=("127.0.0.1", 8000), help="HOST:PORT of the API")
    parser.add_argument("--once", action="store_true", help="send one chat completion, print it and exit")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    if args.model is not None and not args.model.is_file():
        parser.error(f"--model {args.model}: no such file")
    setup_logging(args.log_level)
    outcome: list[int] = []
    # Ctrl-C (SIGINT) and SIGTERM cancel the run; leaving the context managers stops every process.
    trio.run(run_until_signalled, lambda nursery: _demo(args, nursery, outcome))
    return outcome[0] if outcome else 0


async def _demo(args: argparse.Namespace, nursery: trio.Nursery, outcome: list[int]) -> None:
    state: Path = args.state_dir
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    model = args.model or _tiny_model(state)
    node_args = [
        "--engine",
        "llama",
        "--model",
        str(model),
        "--model-id",
        "tiny" if args.model is None else model.stem,
    ]
    async with local_network(
        state, relay_count=5, authority_count=3, threshold=2, node_args=node_args, log_level=args.log_level
    ) as network:
        host, port = args.gateway
        gateway_args = [
            "tp_gateway.cli",
            "--listen",
            f"{host}:{port}",
            "--bootstrap",
            str(network.bootstrap_file),
        ]
        gateway_args += ["--data-dir", str(state / "gateway"), "--log-level", args.log_level]
        async with python_process(gateway_args) as gateway:
            base_url = gateway.announcement["base_url"]
            model_id = await trio.to_thread.run_sync(_wait_for_model, base_url)
            if model_id is None:
                print("the network did not come up in time", file=sys.stderr)
                outcome.append(EXIT_FAILURE)
            elif args.once:
                answer = await trio.to_thread.run_sync(_ask, base_url, model_id)
                print(f"{model_id} answered: {answer}")
            else:
                _print_welcome(base_url, model_id, state)
                await trio.sleep_forever()
    nursery.cancel_scope.cancel()


def _tiny_model(state: Path) -> Path:
    from tp_node.testing.tiny_model import write_tiny_model

    return write_tiny_model(state / "tiny.gguf")


def _get_json(url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=30) as reply:
        return json.loads(reply.read())


def _wait_for_model(base_url: str) -> str | None:
    deadline = time.monotonic() + DEMO_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            models = _get_json(f"{base_url}/models")["data"]
            # Listed is not enough: the first document of a starting network may lack a relay a path needs.
            if models and _get_json(f"{base_url}/health").get("pooled_circuits"):
                return str(models[0]["id"])
        except (OSError, urllib.error.URLError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    return None


def _ask(base_url: str, model_id: str) -> str:
    request = {"model": model_id, "messages": [{"role": "user", "content": DEMO_PROMPT}], "max_tokens": 32}
    reply = _get_json(f"{base_url}/chat/completions", request)
    return str(reply["choices"][0]["message"]["content"])


def _print_welcome(base_url: str, model_id: str, state: Path) -> None:
    print(
        f"""
token.place demo network is up (state in {state}/). Ctrl-C stops everything.

  base URL: {base_url}
  model:    {model_id}

  from openai import OpenAI
  client = OpenAI(base_url="{base_url}", api_key="unused")
  reply = client.chat.completions.create(
      model="{model_id}", messages=[{{"role": "user", "content": "Hello!"}}], stream=True)
  for chunk in reply:
      print(chunk.choices[0].delta.content or "", end="", flush=True)
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
