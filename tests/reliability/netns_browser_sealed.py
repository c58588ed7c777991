"""Run in the user's namespace by the sealed netns test: the remote gateway's chat page in headless Chromium
(Playwright), which seals a prompt to the node because its gateway is not on loopback; prints the answer, what
the page said on screen and the URLs of the POSTs it made as JSON.

    python -m tests.reliability.netns_browser_sealed ROOT_URL PROMPT PROFILE_DIR

The gateway serves plain HTTP here (in production TLS is in front of it, docs/PROTOCOL.md 9): a page from
`http://10.x.0.1` is not a secure context, where browsers withhold WebCrypto, so Chromium is told to treat
this one origin as secure (--unsafely-treat-insecure-origin-as-secure), which is what HTTPS would give it.
"""

from __future__ import annotations

import json
import sys

import httpx
from playwright.sync_api import Request, expect, sync_playwright

from tests.integration.test_browser_chat import CHROMIUM, CHROMIUM_ARGS, UI_TIMEOUT_MS
from tests.reliability.netns_sealed_request import wait_ready

MAX_TOKENS = 24


def main() -> None:
    root_url, prompt, profile = sys.argv[1:4]
    with httpx.Client(timeout=60) as http:
        wait_ready(http, root_url + "/v1")
    expect.set_options(timeout=UI_TIMEOUT_MS)
    posts: list[str] = []
    bodies: list[str] = []
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=[*CHROMIUM_ARGS, f"--unsafely-treat-insecure-origin-as-secure={root_url}"],
        )
        try:
            page = context.new_page()

            def sent(request: Request) -> None:
                if request.method == "POST":
                    posts.append(request.url)
                    bodies.append(request.post_data or "")

            page.on("request", sent)
            page.goto(root_url + "/")  # no ?sealed: a gateway off loopback is sealed by default
            expect(page.locator("#mode")).to_contain_text("Sealed mode")
            expect(page.locator("#model option")).to_have_count(1)
            page.fill("#max-tokens", str(MAX_TOKENS))
            page.fill("#prompt", prompt)
            page.click("#send")
            answer = page.locator(".message.assistant").nth(0)
            expect(answer).to_have_attribute("data-state", "done", timeout=UI_TIMEOUT_MS * 4)
            expect(page.locator("#mode")).to_contain_text("Sealed to the node")
            outcome = {
                "answer": answer.inner_text().strip(),
                "mode": page.locator("#mode").inner_text(),
                "posts": posts,
                "prompt_in_a_post": any(prompt in body for body in bodies),
            }
        finally:
            context.close()
    print(json.dumps(outcome))


if __name__ == "__main__":
    main()
