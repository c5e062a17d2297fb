"""The Add repository page when the backend's shared GITHUB_WEBHOOK_SECRET applies: the answer
carries no secret, and the page says which secret to enter instead of showing an empty one."""

from __future__ import annotations

import uuid

import pytest
from playwright.sync_api import Browser, expect

from tests.pages.conftest import API_TOKEN, Stack

SHARED_SECRET = "operator-wide-webhook-secret-0451"


@pytest.fixture
def stack_env(stack_env: dict[str, str]) -> dict[str, str]:
    """The pages' environment plus a shared webhook secret."""
    stack_env["GITHUB_WEBHOOK_SECRET"] = SHARED_SECRET
    return stack_env


def test_shared_secret_is_named_not_shown(browser: Browser, backend: Stack) -> None:
    context = browser.new_context(base_url=backend.url)
    page = context.new_page()
    page.goto("/ui/repos/new")
    page.get_by_label("Repository URL").fill(f"https://github.com/octo-org/{uuid.uuid4().hex}")
    page.get_by_role("button", name="Add repository").click()
    token_dialog = page.locator("#token-dialog")
    expect(token_dialog).to_be_visible()
    token_dialog.get_by_label("Token").fill(API_TOKEN)
    token_dialog.get_by_role("button", name="Save").click()

    expect(page.locator("#repo-created")).to_be_visible()
    expect(page.locator("#created-secret-shared")).to_be_visible()
    expect(page.locator("#created-secret-shared")).to_contain_text("GITHUB_WEBHOOK_SECRET")
    expect(page.locator("#created-secret-row")).to_be_hidden()
    expect(page.locator("#created-secret-once")).to_be_hidden()
    assert SHARED_SECRET not in page.content()
    context.close()
