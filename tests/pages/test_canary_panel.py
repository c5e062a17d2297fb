"""The model page's canary panel: start a challenger, compare both versions live, promote it.

Two versions registered straight into the session's MLflow (constant classifiers, so every
answer names its version), v1 served; the page starts v2 as a 50% canary, shows both versions'
live figures once predictions arrive, and promotes it after asking. Each version also shows its
gate metric against the served version's.
"""

from __future__ import annotations

import uuid

import httpx
import mlflow
from playwright.sync_api import Browser, expect
from sklearn.dummy import DummyClassifier

from tests.pages.conftest import API_TOKEN, Stack
from tests.serving.conftest import iris_like, register_version
from tests.support.processes import wait_for

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
ROW = [6.1, 2.8, 4.7, 1.2]


def test_a_canary_is_started_compared_and_promoted_from_the_model_page(
    browser: Browser, stack: Stack, mlflow_uri: str
) -> None:
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_registry_uri(mlflow_uri)
    name = f"canary-page-{uuid.uuid4().hex[:8]}"
    x, _ = iris_like()
    for label, accuracy in (("old", 0.95), ("new", 0.93)):
        model = DummyClassifier(strategy="constant", constant=label).fit(x, [label] * len(x))
        register_version(model, x, name, metrics={"accuracy": accuracy})
    deployed = httpx.post(f"{stack.url}/models/{name}/deploy", json={"version": "1"}, headers=AUTH)
    assert deployed.status_code == 200, deployed.text

    def served_by_model_server() -> bool:
        rows = httpx.get(f"{stack.model_server_url}/models").json()["models"]
        return any(row["name"] == name and row["version"] == "1" for row in rows)

    wait_for(served_by_model_server, 60, 0.2, "the model server serving v1")

    context = browser.new_context(base_url=stack.url)
    context.add_init_script(f"localStorage.setItem('notebook-mlops.apiToken', '{API_TOKEN}')")
    page = context.new_page()
    page.goto(f"/ui/models/{name}")
    expect(page.locator('#versions-body tr[data-version="2"] .served-diff')).to_have_text(
        "accuracy \u22120.02"  # a minus sign
    )
    expect(page.locator('#versions-body tr[data-version="1"] .served-diff')).to_have_text("served")
    panel = page.locator("#canary")
    expect(panel.locator("#canary-summary")).to_have_text(
        "No challenger runs beside the served version."
    )

    panel.get_by_label("Challenger version").select_option("2")
    panel.get_by_label("Share of requests (%)").fill("50")
    panel.get_by_label("Mode").select_option("split")
    panel.get_by_role("button", name="Start canary").click()
    expect(panel.locator("#canary-summary")).to_contain_text(
        "v2 answers 50% of requests beside v1", timeout=20_000
    )
    expect(panel.locator("#canary-policy")).to_contain_text("The promotion policy waits")

    def both_answered() -> bool:
        versions = {
            httpx.post(f"{stack.url}/models/{name}/predict", json={"data": [ROW]}).json()[
                "model_version"
            ]
            for _ in range(20)
        }
        return versions == {"1", "2"}

    wait_for(both_answered, 60, 0.5, "answers from both versions")

    def counted() -> bool:
        status = httpx.get(f"{stack.url}/models/{name}/canary", headers=AUTH).json()
        return all(v["requests"] > 0 for v in status["versions"])

    wait_for(counted, 30, 0.5, "both versions' requests in the prediction log")
    page.reload()
    requests = panel.locator('#canary-body tr[data-figure="requests"] td.num')
    expect(requests.nth(0)).not_to_have_text("0")
    expect(requests.nth(1)).not_to_have_text("0")
    expect(panel.locator('#canary-body tr[data-figure="error_rate"]')).to_contain_text("no worse")
    expect(panel.locator("#canary-challenger-head")).to_have_text("Challenger v2")

    panel.get_by_role("button", name="Promote v2").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text("v2 answers every request from now on")
    dialog.get_by_role("button", name="Promote v2").click()
    expect(page.locator("#served-version")).to_contain_text("v2", timeout=20_000)
    history = page.locator("#history li").first
    expect(history).to_contain_text("Promoted v2")
    expect(history).to_contain_text("promoted by api (the policy would wait")
    expect(panel.locator("#canary-summary")).to_have_text(
        "No challenger runs beside the served version."
    )
    context.close()
