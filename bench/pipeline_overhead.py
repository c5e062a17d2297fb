"""What a pipeline costs on top of running its notebook: phase times and the overhead ratio.

Run from the repository root:

    .venv/bin/python -m bench.pipeline_overhead            # 3 runs of each (~2-3 min)
    .venv/bin/python -m bench.pipeline_overhead --runs 5

Baseline: `papermill.execute_notebook` of the shipped iris notebook in this process, logging to
the same MLflow server (what a data scientist's own run costs). Measured: the same notebook
pushed to a local git repository and run by a real Celery worker (fetch the commit, check the
contract, run the tagged cells in a child-process kernel, log and register the model), timed
from sending the task until the pipeline row is finished; with per-phase medians from the
phase records. Both run in the same script on the same machine, so the ratio is comparable
across machines even though seconds are not.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import nbformat
import papermill
from cryptography.fernet import Fernet
from mlflow import MlflowClient

from mlops_core.database import session_scope, upgrade_database
from mlops_core.schema import Pipeline
from mlops_core.settings import Settings
from mlops_core.states import PipelineStatus
from mlops_core.task_queue import RUN_PIPELINE_TASK, make_celery
from tests.support.processes import ManagedProcess, wait_for
from tests.support.services import MlflowServer, RedisServer

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "notebooks" / "iris_classifier.ipynb"


def notebook_named(model_name: str) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if "mlops:config" in cell.metadata.get("tags", []):
            cell.source = cell.source.replace('"iris-classifier"', f'"{model_name}"')
    return notebook


def baseline(workdir: Path, mlflow_uri: str) -> float:
    """Plain papermill on the whole notebook, in this process, logging to its own MLflow run."""
    path = workdir / f"baseline-{uuid.uuid4().hex[:6]}.ipynb"
    nbformat.write(notebook_named("bench-baseline"), path)
    client = MlflowClient(mlflow_uri)
    run = client.create_run(client.create_experiment(f"bench-{uuid.uuid4().hex[:6]}"))
    os.environ.update(MLFLOW_TRACKING_URI=mlflow_uri, MLFLOW_RUN_ID=run.info.run_id)
    started = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(path),
            str(path.with_suffix(".out.ipynb")),
            parameters={"MODEL_OUTPUT_PATH": str(workdir / "baseline.joblib")},
            kernel_name="python3",
            progress_bar=False,
            cwd=str(workdir),
        )
    finally:
        del os.environ["MLFLOW_RUN_ID"]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlops-bench-pipeline-") as tmp:
        workdir = Path(tmp)
        (workdir / "redis").mkdir()
        redis_server = RedisServer(workdir / "redis")
        mlflow_server = MlflowServer(workdir / "mlflow")
        redis_server.start()
        mlflow_server.start()
        database_url = f"sqlite:///{workdir / 'mlops.db'}"
        upgrade_database(database_url)
        home = workdir / "home"
        home.mkdir()
        worker = ManagedProcess(
            ["celery", "-A", "worker.celery_app", "worker", "--loglevel", "WARNING"],
            env={
                "MLOPS_HOME": str(home),
                "REDIS_URL": redis_server.url,
                "DATABASE_URL": database_url,
                "MLFLOW_TRACKING_URI": mlflow_server.uri,
                "ENCRYPTION_KEY": Fernet.generate_key().decode(),
                "ALLOW_LOCAL_REPOS": "true",
                "AUTO_DEPLOY_ON_SUCCESS": "false",
                "NO_PROXY": "127.0.0.1,localhost",
            },
            log_path=workdir / "worker.log",
            cwd=home,
        )
        try:
            print(f"baseline: papermill in-process, {args.runs} runs")
            base = [baseline(workdir, mlflow_server.uri) for _ in range(args.runs)]
            print(f"pipeline: through the worker, {args.runs} runs")
            walls, phases = [], {}
            for i in range(args.runs):
                wall, times = run_pipeline(workdir, i, database_url, redis_server.url)
                walls.append(wall)
                for name, seconds in times.items():
                    phases.setdefault(name, []).append(seconds)
        finally:
            worker.stop()
            mlflow_server.stop()
            redis_server.stop()
    print(f"\nbaseline (papermill only) median {statistics.median(base):6.2f} s  runs {fmt(base)}")
    print(f"pipeline (push to model)  median {statistics.median(walls):6.2f} s  runs {fmt(walls)}")
    for name, values in phases.items():
        print(f"  phase {name:<9} median {statistics.median(values):6.2f} s")
    ratio = statistics.median(walls) / statistics.median(base)
    print(f"overhead ratio pipeline/baseline: {ratio:.2f}")


def run_pipeline(
    workdir: Path, index: int, database_url: str, redis_url: str
) -> tuple[float, dict]:
    repo = workdir / f"repo-{index}"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@example.com"]
    subprocess.run([*git, "init", "--quiet", "--initial-branch", "main"], check=True)
    nbformat.write(notebook_named(f"bench-iris-{uuid.uuid4().hex[:6]}"), repo / "train.ipynb")
    subprocess.run([*git, "add", "--all"], check=True)
    subprocess.run([*git, "commit", "--quiet", "-m", "bench"], check=True)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    with session_scope(database_url) as session:
        row = Pipeline(
            repo_url=repo.as_uri(),
            branch="main",
            notebook_path="train.ipynb",
            commit_sha=sha.stdout.strip(),
        )
        session.add(row)
        session.flush()
        pipeline_id = row.id
    app = make_celery(Settings(redis_url=redis_url))
    started = time.perf_counter()
    app.send_task(RUN_PIPELINE_TASK, args=[pipeline_id])

    def finished() -> Pipeline | None:
        with session_scope(database_url) as session:
            p = session.get(Pipeline, pipeline_id)
            if p and PipelineStatus(p.status).finished:
                _ = [ph.status for ph in p.phases]
                return p
            return None

    done = wait_for(finished, 600, 0.1, "pipeline")
    wall = time.perf_counter() - started
    app.close()
    if done.status != PipelineStatus.SUCCESS:
        raise SystemExit(f"pipeline failed: {done.error}")
    times = {
        ph.name: (ph.finished_at - ph.started_at).total_seconds()
        for ph in done.phases
        if ph.started_at and ph.finished_at
    }
    print(f"  run {index + 1}: {wall:.2f} s")
    return wall, times


def fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
