"""Attacks on tp-gateway as a web page (or a stranger on the LAN) would make them, over real sockets against a
real gateway process on a local network of processes; honest OpenAI SDK requests still succeed.

A browser lets any site send a "simple" cross-site POST (text/plain, a form) to http://127.0.0.1:8000, and
after DNS rebinding (the attacker's own name resolving to 127.0.0.1) read the answers. See
tests/adversarial/notes-gwauth.md for each attack, its defence and its test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
from openai import OpenAI

from tests.integration.gateway_network import BackgroundGateway, RunningGateway, running_gateway
from tp_dev.local_network import free_ports
from tp_dev.processes import python_process
from tp_gateway.cli import INSECURE_FLAG

API_KEY = "sk-tp-adversarial-51b7"
ATTACKER_ORIGIN = "http://attacker.example"
CHAT = {"model": "", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
TIMEOUT_S = 30.0
EXIT_USAGE = 2
# Runs tp-gateway with an audit hook that reports every bind and refuses any that is not on loopback: the
# test never listens beyond this machine, whatever the gateway does.
NO_PUBLIC_BIND = """
import sys
def guard(event, args):
    if event == "socket.bind" and isinstance(args[1], tuple):
        print("BIND", args[1][0], file=sys.stderr, flush=True)
        if args[1][0] not in ("127.0.0.1", "::1", "localhost"):
            raise PermissionError("the test's audit hook refused a non-loopback bind")
sys.addaudithook(guard)
from tp_gateway.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """A keyless gateway on 127.0.0.1 (the default a browser on the same machine can reach)."""
    background = BackgroundGateway(partial(running_gateway, tmp_path_factory.mktemp("gateway-attacks")))
    running = background.start()
    try:
        yield running
    finally:
        background.close()


def chat(gateway: RunningGateway) -> bytes:
    return json.dumps({**CHAT, "model": gateway.model_ids[0]}).encode()


def no_cors(response: httpx.Response) -> bool:
    return not any(name.lower().startswith("access-control-") for name in response.headers)


def honest_chat_succeeds(gateway: RunningGateway, api_key: str = "unused") -> None:
    client = OpenAI(base_url=gateway.base_url, api_key=api_key, max_retries=0, timeout=TIMEOUT_S)
    with client:
        answer = client.chat.completions.create(model=gateway.model_ids[0], messages=[CHAT["messages"][0]])
    assert answer.choices[0].finish_reason is not None


def test_a_text_plain_cross_site_post_is_refused(gateway: RunningGateway) -> None:
    """CSRF: <form enctype=text/plain> or fetch(..., {mode: "no-cors"}) from any site, no preflight."""
    url = f"{gateway.base_url}/chat/completions"
    with httpx.Client(timeout=TIMEOUT_S) as client:
        for content_type in ("text/plain", "application/x-www-form-urlencoded"):
            headers = {"Content-Type": content_type}
            refused = client.post(url, content=chat(gateway), headers=headers)
            assert refused.status_code == 415, content_type
            assert refused.json()["error"]["code"] == "unsupported_media_type"
            cross_site = client.post(
                url, content=chat(gateway), headers={**headers, "Origin": ATTACKER_ORIGIN}
            )
            assert cross_site.status_code == 403 and no_cors(cross_site)
    honest_chat_succeeds(gateway)


def test_a_foreign_host_is_refused(gateway: RunningGateway) -> None:
    """DNS rebinding: rebind.attacker.example now resolves to 127.0.0.1; the page reads what it fetches."""
    port = httpx.URL(gateway.base_url).port
    rebound = {"Host": f"rebind.attacker.example:{port}"}
    with httpx.Client(timeout=TIMEOUT_S) as client:
        for path in ("/v1/models", "/v1/health", "/v1/metrics", "/"):
            refused = client.get(f"{gateway.root_url}{path}", headers=rebound)
            assert refused.status_code == 421 and refused.json()["error"]["code"] == "host_not_allowed", path
        posted = client.post(
            f"{gateway.base_url}/chat/completions",
            content=chat(gateway),
            headers={**rebound, "Content-Type": "application/json"},
        )
        assert posted.status_code == 421
        assert client.get(f"{gateway.base_url}/models", headers={"Host": "token.place"}).status_code == 421
        assert client.get(f"http://localhost:{port}/v1/models").status_code == 200
    honest_chat_succeeds(gateway)


def test_a_foreign_origin_gets_no_cors_and_is_refused(gateway: RunningGateway) -> None:
    preflight = {"Origin": ATTACKER_ORIGIN, "Access-Control-Request-Method": "POST"}
    with httpx.Client(timeout=TIMEOUT_S) as client:
        asked = client.options(f"{gateway.base_url}/chat/completions", headers=preflight)
        assert asked.status_code == 403 and no_cors(asked)
        read = client.get(f"{gateway.base_url}/models", headers={"Origin": ATTACKER_ORIGIN})
        assert read.status_code == 403 and no_cors(read)
        assert read.json()["error"]["code"] == "origin_not_allowed"
        own = client.get(f"{gateway.base_url}/models", headers={"Origin": gateway.root_url})
        assert own.status_code == 200 and no_cors(own)


async def test_paths_that_merely_end_in_health_need_the_key(gateway: RunningGateway, tmp_path: Path) -> None:
    args = ["tp_gateway.cli", "--listen", "127.0.0.1:0", "--bootstrap", str(gateway.network.bootstrap_file)]
    args += ["--data-dir", str(tmp_path / "keyed"), "--api-key", API_KEY, "--log-level", "warning"]
    async with python_process(args) as keyed:
        base_url = keyed.announcement["base_url"]

        def probe() -> None:
            with httpx.Client(timeout=TIMEOUT_S) as client:
                for path in ("/chat/completions/health", "/models/health", "/models/x/metrics"):
                    refused = client.get(f"{base_url}{path}")
                    assert refused.status_code == 401, path
                    assert refused.json()["error"]["code"] == "invalid_api_key"
                blind = client.post(
                    f"{base_url}/chat/completions/health",
                    content=chat(gateway),
                    headers={"Content-Type": "application/json"},
                )
                assert blind.status_code == 401
                for path in ("/health", "/metrics"):
                    assert client.get(f"{base_url}{path}").status_code in (200, 503), path

        await trio.to_thread.run_sync(probe)


def run_gateway(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TP_GATEWAY_") and k != "TP_API_KEY"}
    return subprocess.run(
        [sys.executable, "-c", NO_PUBLIC_BIND, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=env,
        check=False,
    )


def test_a_keyless_listen_beyond_loopback_exits_before_binding(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    (port,) = free_ports(1)
    base = ["--bootstrap", str(gateway.network.bootstrap_file), "--data-dir", str(tmp_path / "public")]
    refused = run_gateway(["--listen", f"0.0.0.0:{port}", *base])
    assert refused.returncode == EXIT_USAGE
    assert "--api-key" in refused.stderr and INSECURE_FLAG in refused.stderr
    assert "BIND" not in refused.stderr, "it refused before binding anything"

    # The opt-out is loud: the warning comes before the bind (which the audit hook then refuses).
    opted_out = run_gateway(["--listen", f"0.0.0.0:{port}", INSECURE_FLAG, *base])
    assert opted_out.returncode == 1
    warned = opted_out.stderr.index("has no API key")
    assert warned < opted_out.stderr.index("BIND 0.0.0.0")
