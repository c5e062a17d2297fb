"""The model page explains its versions: each one's hyperparameters, and any two side by side
with what differs marked; the overview says which version a run produced and whether it serves.

Versions are registered on the session's MLflow as the worker registers them (params and gate
on the run, commit and trigger parameters as tags), so the backend alone is enough.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from playwright.sync_api import Browser, Route, expect

from mlops_core.model_registry import registry_client, set_served_version
from tests.pages.conftest import API_TOKEN, Stack, _run_stack
from tests.serving.test_version_compare import version_of


@pytest.fixture
def model_backend(
    stack_env: dict[str, str], mlflow_uri: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """The backend on the session's MLflow, with a serving alias of its own."""
    stack = Stack(env=stack_env, log_dir=tmp_path / "logs")
    stack_env.update(
        {
            "MLFLOW_TRACKING_URI": mlflow_uri,
            "PUBLIC_BASE_URL": stack.url,
            "SERVING_ALIAS": f"pages{uuid.uuid4().hex[:8]}",
        }
    )
    yield from _run_stack(stack, request, backend_only=True)


def test_two_versions_compared_side_by_side_with_differences_marked(
    browser: Browser, model_backend: Stack, mlflow_uri: str
) -> None:
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_registry_uri(mlflow_uri)
    registry = registry_client(mlflow_uri)
    name = f"compare-{uuid.uuid4().hex[:8]}"
    version_of(
        registry, name, accuracy=0.9, params={"C": "0.05", "MAX_ITER": "500"}, commit="a" * 40
    )
    version_of(
        registry,
        name,
        accuracy=0.95,
        params={"C": "0.25", "MAX_ITER": "500"},
        commit="b" * 40,
        given={"C": 0.25},
    )
    version_of(
        registry, name, accuracy=0.85, params={"C": "1.0", "MAX_ITER": "900"}, commit="c" * 40
    )
    set_served_version(registry, name, "2", model_backend.env["SERVING_ALIAS"])

    browser_context = browser.new_context(base_url=model_backend.url)
    browser_context.add_init_script(
        f"localStorage.setItem('notebook-mlops.apiToken', '{API_TOKEN}')"
    )
    page = browser_context.new_page()
    page.goto(f"/ui/models/{name}")

    # Each version lists its hyperparameters, the trigger's marked as given.
    row = page.locator('#versions-body tr[data-version="2"]')
    row.get_by_text("2 parameters").click()
    expect(row.locator(".param-list")).to_contain_text("C0.25 (given)")
    expect(row.locator(".param-list")).to_contain_text("MAX_ITER500")

    # The comparison opens on the served version against the newest.
    card = page.locator("#compare")
    expect(card).to_be_visible()
    expect(card.locator("#compare-head-a")).to_have_text("v2 (serving)")
    expect(card.locator("#compare-head-b")).to_have_text("v3")
    expect(card.locator('tr[data-name="MAX_ITER"]')).to_have_attribute("data-changed", "true")

    # Any two: v1 against v2, picked quickly, the answer for the pair in between (v1 against v3)
    # held back until v1 against v2 is shown: arriving late, it must not replace it.
    held: list[Route] = []
    between = re.compile(r"/compare\?a=1&b=3$")
    page.route(between, lambda route: held.append(route))
    card.get_by_label("A version").select_option("1")
    card.get_by_label("B version").select_option("2")
    expect(card.locator("#compare-head-a")).to_have_text("v1")
    c = card.locator('tr[data-name="C"]')
    expect(c.locator('[data-side="b"]')).to_have_text("0.25 (given)")
    assert len(held) == 1, "the pick of A alone asked for v1 against v3"
    with page.expect_response(between):
        held[0].continue_()
    expect(c).to_have_attribute("data-changed", "true")
    expect(c.locator('[data-side="a"]')).to_have_text("0.05")
    expect(c.locator('[data-side="b"]')).to_have_text("0.25 (given)")
    expect(card.locator('tr[data-name="MAX_ITER"]')).to_have_attribute("data-changed", "false")
    accuracy = card.locator('tr[data-name="accuracy"]')
    expect(accuracy).to_have_attribute("data-changed", "true")
    expect(accuracy.locator('[data-side="b"]')).to_contain_text("+0.05 better")
    commit = card.locator('tr[data-name="commit"]')
    expect(commit).to_have_attribute("data-changed", "true")
    expect(commit.locator('[data-side="a"]')).to_have_text("aaaaaaa")
    expect(card.locator('tr[data-name="notebook"]')).to_have_attribute("data-changed", "false")
    expect(card.locator("#compare-summary")).to_have_text("3 differences marked")
    browser_context.close()
