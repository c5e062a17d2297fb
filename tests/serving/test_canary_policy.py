"""Pipelines deploy progressively, and the promotion policy decides on live evidence.

The whole flow with real parts: a Celery worker runs pushed notebooks whose config cell asks
for `DEPLOY_STRATEGY = "canary"`; a model server follows the registry; a backend stores the
prediction log and runs the policy loop. Traffic with ground truth (feedback) goes through the
backend. The first version is served directly (nothing to compare with); a retrained one as
good starts as the challenger and is promoted; one trained on shuffled labels, which scores
well offline because its notebook measures accuracy on its own training rows, also passes its
gate, starts as the challenger, and is aborted on its live accuracy. Each decision is in the
deployment history with the numbers it used.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient
from sklearn.datasets import load_iris

from mlops_core.database import upgrade_database
from mlops_core.launch_commands import BACKEND_APP, uvicorn_command
from mlops_core.model_registry import served_version
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.pipeline.conftest import (
    GitRepo,
    WorkerGroup,
    build_notebook,
    create_pipeline,
    log_events,
    send_task,
    start_worker,
    wait_finished,
)
from tests.serving.conftest import REPO_ROOT, ModelServer, unique
from tests.support.processes import ManagedProcess, free_port, wait_for, wait_http
from tests.support.services import RedisServer

TOKEN = "canary-policy-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
X, Y = load_iris(return_X_y=True)
_request_ids = count()


def notebook(model_name: str, version: str, *, shuffle: bool) -> str:
    """A decision tree on iris that asks to be deployed as a canary; with `shuffle` it learns
    shuffled labels, and its evaluation (on its own training rows) does not notice."""
    config = (
        f'MODEL_NAME = "{model_name}"\nVERSION = "{version}"\nDEPLOY_STRATEGY = "canary"\n'
        f"GATE_TOLERANCE = 0.05\nSHUFFLE_LABELS = {shuffle}"
    )
    return build_notebook(
        [
            (("mlops:config",), config),
            (
                ("mlops:preprocessing",),
                "from sklearn.datasets import load_iris\nX, y = load_iris(return_X_y=True)\n"
                "if SHUFFLE_LABELS:\n    import numpy as np\n"
                "    y = np.random.default_rng(7).permutation(y)",
            ),
            (
                ("mlops:training",),
                "from sklearn.tree import DecisionTreeClassifier\n"
                "model = DecisionTreeClassifier(random_state=0).fit(X, y)",
            ),
            (
                ("mlops:evaluation",),
                "import mlflow\nmlflow.log_metric('accuracy', model.score(X, y))",
            ),
            (("mlops:export",), "import joblib\njoblib.dump(model, MODEL_OUTPUT_PATH)"),
        ]
    )


@dataclass
class Stack:
    name: str
    backend: str
    worker: WorkerGroup
    replica: ModelServer
    repo: GitRepo
    database_url: str

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.backend, headers=AUTH, timeout=30)

    def push(self, version: str, *, shuffle: bool) -> tuple[int, dict[str, Any]]:
        """Commit the notebook, run its pipeline to the end; (pipeline id, its state)."""
        sha = self.repo.commit(
            {"train.ipynb": notebook(self.name, version, shuffle=shuffle)}, f"train {version}"
        )
        pipeline_id = create_pipeline(self.database_url, self.repo, commit_sha=sha)
        send_task(self.worker.redis_url, pipeline_id)
        state = wait_finished(self.database_url, pipeline_id, timeout=300)
        assert state["status"] == "success", state
        return pipeline_id, state

    def history(self) -> list[dict[str, Any]]:
        with self.api() as api:
            return api.get(f"/models/{self.name}/history").json()


@pytest.fixture(scope="module")
def stack(
    registry: MlflowClient,
    mlflow_uri: str,
    serving_alias: str,
    server_env: dict[str, str],
    start_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("canary-policy")
    (tmp / "redis").mkdir()
    own_redis = RedisServer(tmp / "redis")
    own_redis.start()
    database_url = f"sqlite:///{tmp / 'mlops.db'}"
    upgrade_database(database_url)
    replica = start_server("canary-policy", REDIS_URL=own_redis.model_server_url)
    worker = start_worker(
        tmp,
        redis_url=own_redis.url,
        database_url=database_url,
        mlflow_uri=mlflow_uri,
        extra_env={
            "SERVING_ALIAS": serving_alias,
            "MODEL_HEARTBEAT_INTERVAL_SECONDS": "1",
            "MODEL_SERVER_URL": replica.url,
            "CELL_TIMEOUT_SECONDS": "120",
            "CANARY_WEIGHT": "50",
        },
        name="canary",
    )
    port = free_port()
    backend = ManagedProcess(
        uvicorn_command(BACKEND_APP, port, log_level="warning"),
        env={
            **server_env,
            "REDIS_URL": own_redis.url,
            "MLOPS_HOME": str(tmp / "home"),
            "DATABASE_URL": database_url,
            "ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
            "MODEL_SERVER_URL": replica.url,
            "API_TOKEN": TOKEN,
            "CANARY_MIN_REQUESTS": "40",
            "CANARY_MIN_SECONDS": "2",
            "CANARY_MIN_FEEDBACK": "30",
            "CANARY_CHECK_INTERVAL_SECONDS": "1",
            # Latency is not what this test is about, and a loaded machine makes it noisy.
            "CANARY_LATENCY_SLACK_MS": "5000",
        },
        log_path=tmp / "backend.log",
        cwd=REPO_ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", 60, backend)
        yield Stack(
            unique("canary-iris"), url, worker, replica, GitRepo(tmp / "repo"), database_url
        )
    finally:
        backend.stop()
        worker.stop()
        replica.stop()
        own_redis.stop()


def labelled_traffic(stack: Stack, rows: int) -> None:
    """`rows` predictions of iris rows through the backend, then their true labels as
    feedback (sent again until the prediction log has every request)."""
    labels: dict[str, int] = {}
    with httpx.Client(base_url=stack.backend, timeout=30) as client:
        for _ in range(rows):
            n = next(_request_ids)
            request_id = f"iris-{n}"
            answer = client.post(
                f"/models/{stack.name}/predict",
                json={"data": [X[n % len(X)].tolist()]},
                headers={"X-Request-ID": request_id},
            )
            assert answer.status_code == 200, answer.text
            labels[request_id] = int(Y[n % len(Y)])

    def all_accepted() -> bool:
        with stack.api() as api:
            items = [{"request_id": rid, "label": label} for rid, label in labels.items()]
            outcome = api.post(f"/models/{stack.name}/feedback", json={"items": items}).json()
        for request_id in set(labels) - set(outcome["unknown"]):
            labels.pop(request_id)
        return not labels

    wait_for(all_accepted, 30, 0.5, "feedback accepted for every request")


def decided(stack: Stack, action: str, version: str) -> dict[str, Any]:
    """Send labelled traffic until the policy's `action` on `version` is in the history."""

    def done() -> dict[str, Any] | None:
        found = next(
            (
                row
                for row in stack.history()
                if (row["action"], row["version"], row["actor"])
                == (action, version, "canary policy")
            ),
            None,
        )
        if found is None:
            labelled_traffic(stack, 40)
        return found

    return wait_for(done, 180, 0.5, f"the canary policy to {action} v{version}")


def test_the_policy_promotes_an_as_good_challenger_and_aborts_a_worse_one(
    stack: Stack, registry: MlflowClient, serving_alias: str
) -> None:
    first, _ = stack.push("1.0", shuffle=False)
    first_log = " ".join(event.text for event in log_events(stack.worker.redis_url, first))
    assert "no other version of" in first_log and "so version 1 is served directly" in first_log
    stack.replica.wait_serving(stack.name, "1")

    second, state = stack.push("1.1", shuffle=False)
    assert state["params"]["canary"] == {"champion": "1", "mode": "split", "weight": 50.0}
    deploy_lines = [
        e.text for e in log_events(stack.worker.redis_url, second) if e.phase == "deploy"
    ]
    # The phase's last line of its own (the runner then records its end).
    assert deploy_lines[-2].startswith(
        f"canary started: {stack.name} version 2 answers 50% of requests beside version 1"
    ), deploy_lines
    assert served_version(registry, stack.name, serving_alias) == "1"  # not yet

    promoted = decided(stack, "promote", "2")
    assert promoted["previous_version"] == "1"
    evidence = promoted["evidence"]
    assert evidence["verdict"] == "promote"
    assert evidence["challenger"]["requests"] >= 40 and evidence["champion"]["requests"] > 0
    quality = next(check for check in evidence["checks"] if check["name"] == "live_quality")
    assert quality["outcome"] == "ok" and quality["challenger"] == 1.0
    assert promoted["reason"].startswith("canary policy: v2 no worse than v1 after")
    stack.replica.wait_serving(stack.name, "2")

    # Shuffled labels: accuracy 0.99 on its own training rows passes the gate offline...
    _, state = stack.push("1.2", shuffle=True)
    assert state["params"]["gate_verdict"]["passed"] is True
    assert state["params"]["canary"]["champion"] == "2"
    aborted = decided(stack, "abort", "3")
    # ...and live feedback shows what it is.
    evidence = aborted["evidence"]
    assert evidence["verdict"] == "abort"
    quality = next(check for check in evidence["checks"] if check["name"] == "live_quality")
    assert quality["outcome"] == "worse"
    assert quality["challenger"] < 0.6 and quality["champion"] == 1.0
    assert aborted["reason"].startswith("canary policy: live accuracy ")
    assert served_version(registry, stack.name, serving_alias) == "2"
    with stack.api() as api:
        assert api.get(f"/models/{stack.name}/canary").json()["active"] is False
    wait_for(
        lambda: stack.replica.models()[stack.name]["challenger"] is None,
        30,
        0.2,
        "the replica unloading the aborted challenger",
    )
