"""The chat page in sealed mode (headless Chromium through Playwright) against a real `tp-gateway --public`
on a local network of processes: the page seals each request to the node with the bundled JS client
(tp_gateway/static/sealed.bundle.js), says so on screen, and nothing it sends the gateway holds the prompt.
Skipped like tests/integration/test_browser_chat.py when Chromium or Playwright is missing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.integration.gateway_network import BackgroundGateway, RunningGateway, running_gateway
from tests.integration.test_browser_chat import (
    CHROMIUM,
    CHROMIUM_ARGS,
    REQUIRE_ENV,
    UI_TIMEOUT_MS,
    missing_browser,
)

MODEL = "tiny"
SENTINEL = "quokka-0b7c"


@pytest.fixture(scope="module")
def gateway(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    reason = missing_browser()
    if reason is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
        pytest.skip(reason)
    node_args = ["--engine", "llama", "--model", str(tiny_model_path), "--model-id", MODEL, "--n-ctx", "2048"]
    background = BackgroundGateway(
        partial(
            running_gateway,
            tmp_path_factory.mktemp("sealed-browser"),
            node_args=node_args,
            gateway_args=["--public"],
        )
    )
    running = background.start()
    try:
        yield running
    finally:
        background.close()


def test_the_chat_page_seals_its_requests_and_says_so(gateway: RunningGateway, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)
    sent: list[tuple[str, str, str]] = []
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = context.new_page()
            page.on("request", lambda r: sent.append((r.method, r.url, r.post_data or "")))
            page.goto(gateway.root_url + "/?sealed")
            expect(page.locator("#mode")).to_contain_text("Sealed mode")
            expect(page.locator("#model option")).to_have_count(1)
            page.fill("#max-tokens", "24")
            page.fill("#prompt", f"The password is {SENTINEL}.")
            page.click("#send")
            answer = page.locator(".message.assistant").nth(0)
            expect(answer).to_have_attribute("data-state", "done")
            assert answer.inner_text().strip(), "the tiny model always says something"
            expect(page.locator("#mode")).to_contain_text("Sealed to the node")
            expect(page.locator("#mode")).to_contain_text("GGUF sha256")
            answer_text = answer.inner_text().strip()
        finally:
            context.close()
    posts = [(url, body) for method, url, body in sent if method == "POST"]
    assert [url.rsplit("/", 2)[-2:] for url, _ in posts] == [["v1", "sealed"]]
    assert not any(SENTINEL in body or answer_text[:20] in body for _, body in posts)
