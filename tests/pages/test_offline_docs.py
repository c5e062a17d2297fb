"""/docs and /redoc work with no network: Swagger UI and ReDoc come from the backend itself."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Browser, Request, Route, expect

from tests.pages.conftest import Stack


def test_the_api_docs_load_and_render_without_any_other_host(
    browser: Browser, backend: Stack, artifacts: Path
) -> None:
    context = browser.new_context(base_url=backend.url)
    asked: list[str] = []
    foreign: list[str] = []

    def offline(route: Route, request: Request) -> None:
        """As on a site with no route out: only the backend answers."""
        asked.append(request.url)
        if request.url.startswith(backend.url):
            route.continue_()
        else:
            foreign.append(request.url)
            route.abort("internetdisconnected")

    context.route("**/*", offline)
    page = context.new_page()

    page.goto("/docs")
    # Swagger UI rendered the backend's own OpenAPI document, operations included.
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("notebook-mlops")
    operation = page.locator(".opblock-summary-path", has_text="/pipelines/{pipeline_id}/logs.txt")
    expect(operation).to_be_visible()
    page.screenshot(path=artifacts / "docs.png")

    page.goto("/redoc")
    expect(page.locator("h1", has_text="notebook-mlops")).to_be_visible(timeout=20_000)
    expect(page.get_by_text("/pipelines/{pipeline_id}/logs.txt").first).to_be_attached()
    page.screenshot(path=artifacts / "redoc.png")

    assert any(url.endswith("swagger-ui-bundle.js") for url in asked)
    assert any(url.endswith("redoc.standalone.js") for url in asked)
    assert foreign == [], "the docs asked another host"
    context.close()
