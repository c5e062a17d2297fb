"""The "Add repository" form names a field the way the form labels it, not as the API spells it."""

from __future__ import annotations

from playwright.sync_api import Browser, expect

from tests.pages.conftest import API_TOKEN, Stack


def test_field_errors_use_the_fields_labels(browser: Browser, backend: Stack) -> None:
    context = browser.new_context(base_url=backend.url)
    context.add_init_script(f"localStorage.setItem('notebook-mlops.apiToken', '{API_TOKEN}')")
    page = context.new_page()
    page.goto("/ui/repos/new")
    page.get_by_label("Repository URL").fill("https://github.com/acme/forms")
    page.get_by_label("Branch").fill("a..b")
    page.get_by_label("Notebook path").fill("../train.ipynb")
    page.get_by_role("button", name="Add repository").click()

    expect(page.locator("#branch-error")).to_have_text(
        "Branch 'a..b' is not a valid git branch name"
    )
    expect(page.locator("#notebook_path-error")).to_have_text("Notebook path must not contain '..'")
    expect(page.get_by_label("Notebook path")).to_have_attribute("aria-invalid", "true")

    page.get_by_label("Branch").fill("main")
    page.get_by_label("Notebook path").fill("notebooks/train.ipynb")
    page.get_by_role("button", name="Add repository").click()
    expect(page.locator("#repo-created")).to_be_visible()

    # The same repository again: the conflict is reported beside the URL, by its label.
    page.goto("/ui/repos/new")
    page.get_by_label("Repository URL").fill("https://github.com/acme/forms.git")
    page.get_by_role("button", name="Add repository").click()
    expect(page.locator("#github_url-error")).to_have_text(
        "Repository URL: https://github.com/acme/forms is already registered as repo 1"
    )
    context.close()
