"""The corpus: notebooks in the styles real users write, tagged by `mlops tag`, through the real
stack (git repository, worker, sandboxed kernel, MLflow, model server) to a served prediction.

tests/corpus/corpus.toml says how each notebook is tagged and how it must end; README.md beside
it where each style comes from. Every notebook is pushed at once to a worker of this module's
own (two pipelines at a time, deploying to a model server of its own), so the corpus costs the
time of its slowest notebooks, not their sum. The module is one xdist group: its tests share
that stack and stay on one test process, while other modules run beside it.
"""

from __future__ import annotations

import json
import math
import tempfile
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pandas as pd
import pytest
from sklearn import datasets

from mlops_cli.main import main as mlops
from mlops_core.database import upgrade_database
from tests.pipeline.conftest import (
    GitRepo,
    WorkerGroup,
    create_pipeline,
    log_events,
    redis_db_url,
    start_worker,
    wait_finished,
)
from tests.serving.conftest import ModelServer

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
ENTRIES: list[dict[str, Any]] = tomllib.loads((CORPUS / "corpus.toml").read_text())["notebook"]

pytestmark = [pytest.mark.xdist_group("corpus"), pytest.mark.timeout(900)]


@dataclass
class CorpusRun:
    """One notebook's pipeline, as it ended."""

    entry: dict[str, Any]
    model_name: str
    pipeline_id: int
    state: dict[str, Any]


@dataclass
class CorpusStack:
    worker: WorkerGroup
    server: ModelServer


@pytest.fixture(scope="module")
def corpus_stack(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, mlflow_uri: str
) -> Iterator[CorpusStack]:
    """A model server and a worker deploying to it under an alias of this module's own."""
    tmp = tmp_path_factory.mktemp("corpus")
    alias = f"corpus{uuid.uuid4().hex[:8]}"
    # The worker waits for the replica's report in the Redis database both use, as deployed.
    queue_url = redis_db_url(redis_url, 10)
    server = ModelServer(
        env={
            "REDIS_URL": queue_url,
            "MLFLOW_TRACKING_URI": mlflow_uri,
            "SERVING_ALIAS": alias,
            "MODEL_RECONCILE_INTERVAL_SECONDS": "30",
            "MODEL_HEARTBEAT_INTERVAL_SECONDS": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        },
        log_dir=tmp,
        replica="corpus-replica",
    ).start()
    database_url = f"sqlite:///{tmp / 'mlops.db'}"
    upgrade_database(database_url)
    worker = start_worker(
        tmp,
        redis_url=queue_url,
        database_url=database_url,
        mlflow_uri=mlflow_uri,
        concurrency=2,
        extra_env={
            "AUTO_DEPLOY_ON_SUCCESS": "true",
            "SERVING_ALIAS": alias,
            "MODEL_SERVER_URL": server.url,
            "DEPLOY_WAIT_SECONDS": "90",
            "MIN_ACCURACY_THRESHOLD": "0.8",
            "CELL_TIMEOUT_SECONDS": "300",
            "PIPELINE_TIMEOUT_SECONDS": "600",
        },
        name="corpus",
    )
    yield CorpusStack(worker, server)
    worker.stop()
    server.stop()


def tag(entry: dict[str, Any], model_name: str, into: Path) -> None:
    """Tag the corpus notebook as corpus.toml says, with `mlops tag` itself."""
    arguments = [str(CORPUS / entry["path"]), "--model-name", model_name, *entry["tag"]]
    assert mlops(["tag", *arguments, "--output", str(into)]) == 0, arguments


@pytest.fixture(scope="module")
def corpus_runs(
    corpus_stack: CorpusStack, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, CorpusRun]:
    """Every notebook tagged, committed with the files beside it, pushed; waited for."""
    worker = corpus_stack.worker
    root = tmp_path_factory.mktemp("corpus-repos")
    started = []
    for entry in ENTRIES:
        model_name = f"{entry['model_name']}-{uuid.uuid4().hex[:6]}"
        folder = (CORPUS / entry["path"]).parent
        files: dict[str, bytes | str] = {
            str(path.relative_to(folder)): path.read_bytes()
            for path in folder.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        }
        notebook = Path(entry["path"]).name
        tagged = root / f"{entry['id']}.ipynb"
        tag(entry, model_name, tagged)
        files[notebook] = tagged.read_bytes()
        repo = GitRepo(root / entry["id"])
        sha = repo.commit(files, f"{entry['id']}: tagged for the platform")
        pipeline_id = create_pipeline(
            worker.database_url, repo, commit_sha=sha, notebook_path=notebook
        )
        worker.send(pipeline_id)
        started.append((entry, model_name, pipeline_id))
    return {
        entry["id"]: CorpusRun(
            entry, name, pipeline_id, wait_finished(worker.database_url, pipeline_id, 600)
        )
        for entry, name, pipeline_id in started
    }


def request_rows(entry: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """The prediction request for the rows corpus.toml names, and the expected answers."""
    spec = entry["rows"]
    kind, _, name = spec["from"].partition(":")
    if kind == "sklearn":
        frame = getattr(datasets, name)(as_frame=True).frame
    else:
        frame = pd.read_csv((CORPUS / entry["path"]).parent / name)
    rows = frame.iloc[spec["index"]].drop(columns=spec["drop"])
    if spec.get("records", True):
        body: dict[str, Any] = {"records": json.loads(rows.to_json(orient="records"))}
    else:
        body = {"data": rows.to_numpy().tolist()}
    return body, entry.get("expect", [])


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["id"] for e in ENTRIES])
def test_each_notebook_ends_as_the_corpus_says(
    entry: dict[str, Any], corpus_runs: dict[str, CorpusRun], corpus_stack: CorpusStack
) -> None:
    run = corpus_runs[entry["id"]]
    state = run.state
    if entry["outcome"] == "failed":
        assert state["status"] == "failed", state
        for text in entry["error"]:
            assert text in state["error"], state["error"]
        return

    assert state["status"] == "success", state["error"]
    assert state["phases"]["deploy"] == ("success", None), state["phases"]
    body, expected = request_rows(entry)
    answer = httpx.post(
        f"{corpus_stack.server.url}/predict/{run.model_name}", json=body, timeout=30
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == state["model_version"]
    predictions = answer.json()["predictions"]
    if "expect_between" in entry:
        low, high = entry["expect_between"]
        assert all(math.isfinite(p) and low <= p <= high for p in predictions), predictions
    else:
        assert predictions == expected


def test_a_model_needing_xgboost_records_it_and_the_fits_output_reaches_the_log(
    corpus_runs: dict[str, CorpusRun], corpus_stack: CorpusStack
) -> None:
    run = corpus_runs["iris_xgboost"]
    assert run.state["status"] == "success", run.state["error"]
    uri = corpus_stack.worker.mlflow_uri
    mlflow.set_tracking_uri(uri)  # MLflow resolves `models:/` against the global registry
    mlflow.set_registry_uri(uri)
    with tempfile.TemporaryDirectory() as into:
        folder = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{run.model_name}/{run.state['model_version']}",
            dst_path=into,
            tracking_uri=uri,
            registry_uri=uri,
        )
        requirements = (Path(folder) / "requirements.txt").read_text().split()
    for package in run.entry["requires"]:
        assert any(line.startswith(f"{package}==") for line in requirements), requirements
    lines = [e.text for e in log_events(corpus_stack.worker.redis_url, run.pipeline_id)]
    assert any("[99]\tvalidation_0-mlogloss" in line for line in lines), lines
