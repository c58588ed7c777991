"""The chat page at / in headless Chromium (the system's `chromium`, driven by Playwright), against a real
gateway process on a local network of processes with the tiny llama model.

The page must list the model, stream an answer into the page as it arrives, stop a long answer with the Stop
button, and show errors (here: the gateway's API key is missing, then given). A screenshot goes to
test-artifacts/ ($TP_TEST_ARTIFACTS). Without chromium or Playwright the test is skipped, unless
TP_REQUIRE_BROWSER=1 (CI), where that is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.integration.gateway_network import BackgroundGateway, RunningGateway, running_gateway

CHROMIUM = Path(os.environ.get("TP_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REQUIRE_ENV = "TP_REQUIRE_BROWSER"
ARTIFACTS = Path(os.environ.get("TP_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))
API_KEY = "sk-tp-page-3d9e"
MODEL = "tiny"
LONG_ANSWER_TOKENS = 1800  # seconds of generation for the tiny model on this CPU: long enough to stop
UI_TIMEOUT_MS = 30_000


def missing_browser() -> str | None:
    """Why the browser test cannot run here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install '.[dev]')"
    return None


@pytest.fixture(scope="module")
def gateway(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    reason = missing_browser()
    if reason is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
        pytest.skip(reason)
    node_args = ["--engine", "llama", "--model", str(tiny_model_path), "--model-id", MODEL, "--n-ctx", "2048"]
    background = BackgroundGateway(
        partial(running_gateway, tmp_path_factory.mktemp("browser"), node_args=node_args, api_key=API_KEY)
    )
    running = background.start()
    try:
        yield running
    finally:
        background.close()


@pytest.fixture
def page(gateway: RunningGateway, tmp_path: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a new, empty profile
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def test_chat_page_lists_models_streams_stops_and_shows_errors(
    gateway: RunningGateway, page: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=UI_TIMEOUT_MS)
    origins: set[str] = set()
    page.on("request", lambda request: origins.add(request.url.split("/")[2]))
    page.goto(gateway.root_url + "/")
    expect(page).to_have_title("token.place chat")

    # Without the key the gateway answers 401, and the page says so; with it, the model is listed.
    expect(page.locator("#error")).to_contain_text("401")
    page.fill("#api-key", API_KEY)
    page.locator("#api-key").dispatch_event("change")
    expect(page.locator("#model option")).to_have_count(1)
    page.select_option("#model", MODEL)
    expect(page.locator("#error")).to_be_hidden()

    # A short answer streams in and completes.
    page.fill("#max-tokens", "24")
    page.fill("#prompt", "Say hello to the relays.")
    page.click("#send")
    first = page.locator(".message.assistant").nth(0)
    expect(first).to_have_attribute("data-state", "done")
    assert first.inner_text().strip(), "the tiny model always says something"
    expect(page.locator(".message.user").nth(0)).to_have_text("Say hello to the relays.")

    # A long answer: text shows while it is still streaming; Stop ends it, and it stays stopped.
    page.fill("#max-tokens", str(LONG_ANSWER_TOKENS))
    page.fill("#prompt", "Tell me a very long story.")
    page.click("#send")
    second = page.locator(".message.assistant").nth(1)
    expect(second).to_have_attribute("data-state", "streaming")
    page.wait_for_function(
        "() => document.querySelectorAll('.message.assistant')[1].textContent.length > 0",
        timeout=UI_TIMEOUT_MS,
    )
    assert second.get_attribute("data-state") == "streaming", "text appeared before the answer ended"
    expect(page.locator("#stop")).to_be_enabled()
    page.click("#stop")
    expect(second).to_have_attribute("data-state", "stopped")
    expect(page.locator("#status")).to_have_text("Stopped.")
    expect(page.locator("#stop")).to_be_disabled()
    expect(page.locator("#send")).to_be_enabled()
    stopped_text = second.text_content()
    page.wait_for_timeout(500)
    assert second.text_content() == stopped_text, "nothing arrives after Stop"

    # The conversation goes on after a stop.
    page.fill("#max-tokens", "8")
    page.fill("#prompt", "And now briefly.")
    page.click("#send")
    expect(page.locator(".message.assistant").nth(2)).to_have_attribute("data-state", "done")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "chat-page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    with capsys.disabled():  # shown on a passing run too
        print(f"\nchat page screenshot: {screenshot}")
    assert screenshot.stat().st_size > 0
    assert origins == {gateway.root_url.split("/")[2]}, "the page loads nothing from any other origin"
