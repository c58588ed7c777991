"""Run in the user's namespace by the sealed netns test: a sealed chat completion through the remote gateway
(tp_gateway.sealed_client, trusting the network's bootstrap file), a harmless plaintext request to the remote
gateway (a --public gateway refuses it: the user is not on its loopback), and the same sealed request's fields
through the user's own local gateway; prints the three outcomes as JSON.

    python -m tests.reliability.netns_sealed_request REMOTE_URL LOCAL_URL BOOTSTRAP PROMPT
    python -m tests.reliability.netns_sealed_request --wait URL   # until URL's gateway has a warm circuit
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import httpx

from tp_gateway.sealed_client import SecureChatCompletion

READY_TIMEOUT_S = 90.0
POLL_S = 0.25


def wait_ready(http: httpx.Client, base_url: str) -> str:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        models = http.get(f"{base_url}/models").json()["data"]
        if models and http.get(f"{base_url}/health").json().get("pooled_circuits", 0):
            return str(models[0]["id"])
        if time.monotonic() > deadline:
            sys.exit(f"the gateway at {base_url} had no model with a warm circuit within {READY_TIMEOUT_S} s")
        time.sleep(POLL_S)


def main() -> None:
    if sys.argv[1] == "--wait":
        with httpx.Client(timeout=60) as http:
            wait_ready(http, sys.argv[2])
        return
    remote, local, bootstrap, prompt = sys.argv[1:5]
    with httpx.Client(timeout=60) as http:
        model = wait_ready(http, remote)
        wait_ready(http, local)
        fields: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "max_tokens": 24,
            "seed": 3,
        }
        chat = SecureChatCompletion(remote, bootstrap=bootstrap, http_client=http)
        sealed = chat.create(**fields)
        assert isinstance(sealed, dict)
        # Not the prompt: anything sent in the clear is on the wire, refused or not.
        probe = {**fields, "messages": [{"role": "user", "content": "is plaintext refused here?"}]}
        refused = http.post(f"{remote}/chat/completions", json=probe)
        plain = http.post(f"{local}/chat/completions", json=fields).raise_for_status().json()
    print(
        json.dumps(
            {
                "sealed": sealed["choices"][0]["message"]["content"],
                "remote_plaintext_status": refused.status_code,
                "remote_plaintext_code": refused.json()["error"]["code"],
                "local": plain["choices"][0]["message"]["content"],
            }
        )
    )


if __name__ == "__main__":
    main()
