"""Run in the client's namespace by the netns test: wait until the gateway at URL lists a model with a warm
circuit, send one chat completion, and print the answer as JSON.

    python -m tests.reliability.netns_request http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import json
import sys
import time

import httpx

READY_TIMEOUT_S = 60.0
POLL_S = 0.25


def main() -> None:
    base_url = sys.argv[1]
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(base_url=base_url, timeout=30) as http:
        while True:
            models = http.get("/models").json()["data"]
            if models and http.get("/health").json().get("pooled_circuits", 0):
                break
            if time.monotonic() > deadline:
                sys.exit(f"the gateway had no model with a warm circuit within {READY_TIMEOUT_S} s")
            time.sleep(POLL_S)
        body = {"model": models[0]["id"], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
        response = http.post("/chat/completions", json=body)
    print(json.dumps({"status": response.status_code, "body": response.json()}))


if __name__ == "__main__":
    main()
