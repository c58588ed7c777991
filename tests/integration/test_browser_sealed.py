"""The chat page in sealed mode (headless Chromium through Playwright) against a real `tp-gateway --public`
on a local network of processes: the page seals each request to the node with the bundled JS client
(tp_gateway/static/sealed.bundle.js), says so on screen, and nothing it sends the gateway holds the prompt.
Skipped like tests/integration/test_browser_chat.py when Chromium or Playwright is missing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

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
OTHER_NETWORK_BOOTSTRAP = Path(__file__).parents[2] / "bootstrap" / "default.json"


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


def expect_answered(page: Any) -> Any:
    """The first answer on the page, once done; its error on screen when it failed instead."""
    from playwright.sync_api import expect

    answer = page.locator(".message.assistant").nth(0)
    expect(answer).not_to_have_attribute("data-state", "streaming")
    assert answer.get_attribute("data-state") == "done", page.locator("#error").inner_text()
    return answer


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
            answer = expect_answered(page)
            assert answer.inner_text().strip(), "the tiny model always says something"
            expect(page.locator("#mode")).to_contain_text("Sealed to the node")
            expect(page.locator("#mode")).to_contain_text("GGUF sha256")
            answer_text = answer.inner_text().strip()
        finally:
            context.close()
    posts = [(url, body) for method, url, body in sent if method == "POST"]
    assert [url.rsplit("/", 2)[-2:] for url, _ in posts] == [["v1", "sealed"]]
    assert not any(SENTINEL in body or answer_text[:20] in body for _, body in posts)


def test_a_pinned_bootstrap_is_what_the_page_trusts(gateway: RunningGateway, tmp_path: Path) -> None:
    """A user pins their own bootstrap file (kept in localStorage): the page then verifies the gateway's
    directory against it, so another network's bootstrap (here: the built-in one) makes it refuse, and the
    network's own makes it answer."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = context.new_page()
            page.goto(gateway.root_url + "/?sealed")
            expect(page.locator("#trust-text")).to_contain_text("this gateway's bootstrap file")
            expect(page.locator("#model option")).to_have_count(1)
            page.set_input_files("#bootstrap", str(OTHER_NETWORK_BOOTSTRAP))
            expect(page.locator("#trust-text")).to_contain_text("network token.place")
            page.fill("#max-tokens", "8")
            page.fill("#prompt", "hello")
            page.click("#send")
            expect(page.locator(".message.assistant").nth(0)).to_have_attribute("data-state", "error")
            expect(page.locator("#error")).to_contain_text("trusted signatures")
            page.reload()  # the pin outlives the page
            expect(page.locator("#trust-text")).to_contain_text("network token.place")
            page.set_input_files("#bootstrap", str(gateway.network.bootstrap_file))
            expect(page.locator("#trust-text")).to_contain_text("your pinned bootstrap file")
            expect(page.locator("#model option")).to_have_count(1)
            page.fill("#max-tokens", "8")
            page.fill("#prompt", "hello")
            page.click("#send")
            expect_answered(page)
            page.click("#unpin")
            expect(page.locator("#trust-text")).to_contain_text("this gateway's bootstrap file")
        finally:
            context.close()
