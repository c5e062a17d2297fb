"""With API_READ_TOKEN set, the dashboard asks for a token when its data calls answer 401, then
shows the data, and sends the stored token on the log WebSocket as a subprotocol."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from playwright.sync_api import Browser, expect

from mlops_core.log_events import LogPublisher
from tests.pages.conftest import Stack
from tests.pages.test_log_view import running_pipeline

READ_TOKEN = "pages-read-token"


@pytest.fixture
def stack_env(stack_env: dict[str, str]) -> dict[str, str]:
    """The pages' environment, with reads guarded too."""
    return {**stack_env, "API_READ_TOKEN": READ_TOKEN}


def test_the_dashboard_asks_for_the_read_token_then_shows_the_data(
    browser: Browser, backend: Stack
) -> None:
    pipeline_id = running_pipeline(backend.env["DATABASE_URL"])
    publisher = LogPublisher(redis.Redis.from_url(backend.env["REDIS_URL"]), pipeline_id)
    for i in range(1, 6):
        publisher.publish(f"step {i}", phase="execute", cell=3, stream="stdout")
    page = browser.new_page()
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))

    page.goto(f"{backend.url}/ui/")
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("missing read token")
    dialog.get_by_label("Token").fill(READ_TOKEN)
    dialog.get_by_role("button", name="Save").click()
    expect(page.locator(f'#pipelines-body tr[data-pipeline-id="{pipeline_id}"]')).to_be_visible()

    page.goto(f"{backend.url}/ui/pipelines/{pipeline_id}")
    expect(page.locator("#log .log-line[data-seq]")).to_have_count(5)
    expect(page.locator("#log-state")).to_have_text("live")
    expect(dialog).to_be_hidden()
    assert sockets and not any("token" in url for url in sockets), sockets

    # The raw log downloads with the stored token (a plain link could not send it).
    with page.expect_download() as saving:
        page.get_by_role("button", name="Download log").click()
    saved = Path(saving.value.path())
    assert [line.rsplit(" ", 2)[-2:] for line in saved.read_text().splitlines()] == [
        ["step", str(i)] for i in range(1, 6)
    ]
    page.close()
