"""The model page while the model servers are still swapping: "v1 (switching)", never a plain
"v1" that the replica still answering with v2 contradicts, then plain "v1" once it has swapped.

A real model server (one process) serves v2 of two registered versions; it is paused with
SIGSTOP so that it cannot act on the rollback the page then makes, and resumed with SIGCONT.
Its last report (v2) stays fresh for three heartbeats, which the test's heartbeat interval
makes long enough to look at the page meanwhile.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pytest
from playwright.sync_api import Browser, expect
from sklearn.dummy import DummyClassifier

from mlops_core.launch_commands import MODEL_SERVER_APP, uvicorn_command
from tests.pages.conftest import API_TOKEN, REPO_ROOT, Stack, _run_stack, serving_env
from tests.serving.conftest import iris_like, register_version
from tests.support.processes import ManagedProcess, wait_for, wait_http

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
# Reports go stale after three heartbeats: 30 s of the paused replica's v2 to look at.
HEARTBEAT_SECONDS = "10"


@pytest.fixture
def serving_stack(
    stack_env: dict[str, str], mlflow_uri: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """The backend and one model-server process (no worker: no pipeline runs here)."""
    stack = Stack(env=stack_env, log_dir=tmp_path / "logs")
    stack_env.update(
        serving_env(stack, mlflow_uri) | {"MODEL_HEARTBEAT_INTERVAL_SECONDS": HEARTBEAT_SECONDS}
    )
    # uvicorn runs the app in this one process: its pid is the replica's.
    stack.processes["model-server"] = ManagedProcess(
        uvicorn_command(MODEL_SERVER_APP, stack.model_server_port),
        env=stack.env,
        log_path=stack.log_dir / "model-server.log",
        cwd=REPO_ROOT,
    )
    yield from _run_stack(stack, request, backend_only=True)


def test_the_page_says_switching_until_the_paused_replica_swaps(
    browser: Browser, serving_stack: Stack, mlflow_uri: str, artifacts: Path
) -> None:
    stack = serving_stack
    model_server = stack.processes["model-server"]
    wait_http(f"{stack.model_server_url}/ready", timeout=90, process=model_server)
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_registry_uri(mlflow_uri)
    name = f"switching-{uuid.uuid4().hex[:8]}"
    x, _ = iris_like()
    for label in ("old", "new"):
        model = DummyClassifier(strategy="constant", constant=label).fit(x, [label] * len(x))
        register_version(model, x, name, metrics={"accuracy": 0.9})

    def replica_serves(version: str) -> bool:
        rows = httpx.get(f"{stack.model_server_url}/models", timeout=5).json()["models"]
        return any(row["name"] == name and row["version"] == version for row in rows)

    for version in ("1", "2"):
        deployed = httpx.post(
            f"{stack.url}/models/{name}/deploy", json={"version": version}, headers=AUTH
        )
        assert deployed.status_code == 200, deployed.text
        wait_for(lambda v=version: replica_serves(v), 60, 0.2, f"the model server on v{version}")

    context = browser.new_context(base_url=stack.url)
    context.add_init_script(f"localStorage.setItem('notebook-mlops.apiToken', '{API_TOKEN}')")
    page = context.new_page()
    page.goto(f"/ui/models/{name}")
    served = page.locator("#served-version")
    expect(served).to_have_text("v2", timeout=20_000)
    expect(served).to_have_attribute("data-switching", "false")

    os.kill(model_server.pid, signal.SIGSTOP)
    try:
        page.get_by_role("button", name="Roll back to version 1").click()
        dialog = page.locator("#confirm-dialog")
        expect(dialog).to_contain_text("switches from v2 to v1")
        dialog.get_by_role("button", name="Roll back to v1").click()

        # The registry names v1, the paused replica still reports v2: the page says both, and
        # nothing on it claims that v1 already serves (the toast lasts 4 s: it comes first).
        expect(served).to_have_text("v1 (switching)", timeout=10_000)
        expect(page.locator("#toasts")).to_have_text(
            f"Rolled back {name} to v1; the model servers are switching."
        )
        expect(served).to_have_attribute("data-switching", "true")
        replicas = page.locator("#replicas")
        expect(replicas).to_contain_text("Switching to v1:")
        expect(replicas).to_contain_text("on v2.")
        v1_row = page.locator('#versions-body tr[data-version="1"]')
        expect(v1_row.locator(".actions-cell")).to_have_text("Switching")
        compared = page.locator("#compare-table thead")
        expect(compared).to_contain_text("v1 (switching)")
        expect(compared).not_to_contain_text("(serving)")
        # The premise, from the API: the paused replica's report still stands.
        detail = httpx.get(f"{stack.url}/models/{name}", headers=AUTH).json()
        assert detail["served_version"] == "1"
        assert set(detail["replicas"].values()) == {"2"}, detail["replicas"]
        page.screenshot(path=artifacts / "model-switching.png", full_page=True)
    finally:
        os.kill(model_server.pid, signal.SIGCONT)

    # The replica acts on the rollback it was sent; the page looks again by itself.
    wait_for(lambda: replica_serves("1"), 60, 0.2, "the resumed model server on v1")
    expect(served).to_have_text("v1", timeout=20_000)
    expect(served).to_have_attribute("data-switching", "false")
    expect(replicas).to_have_text("1 model server on v1.")
    expect(v1_row.locator(".actions-cell")).to_have_text("Serving")
    expect(compared).to_contain_text("v1 (serving)")
    context.close()
