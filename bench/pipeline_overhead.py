"""What a pipeline costs on top of running its notebook, and what the kernel sandbox costs.

Run from the repository root (as root: the sandbox needs it, see mlops_core/sandbox.py):

    .venv/bin/python -m bench.pipeline_overhead            # 3 runs of each (~4-6 min)
    .venv/bin/python -m bench.pipeline_overhead --runs 5 --timeline

Baseline: the `papermill` command on the shipped iris notebook, logging to the same MLflow
server (what a data scientist's own run costs). Measured: the same notebook
pushed to a local git repository and run by a real Celery worker (fetch the commit, check the
contract, run the tagged cells in a kernel, log, register and serve the model), timed from
sending the task until the pipeline row is finished, which is after a real model server
reported the new version loaded (push to served); with per-phase medians from the phase
records. Two lanes run side by side, each a worker and a model server on a Redis database of
its own: one with the kernel sandbox (KERNEL_SANDBOX=on, the default), one with
KERNEL_SANDBOX=off. Each is warmed by one unmeasured pipeline, then runs alternate between
them and the baseline (one run at a time), so a slow minute of a shared machine hits all three;
the script prints the sandbox's ratio. --timeline prints the last sandboxed pipeline's system
log lines with their time since the task was sent: where the seconds go. Everything runs in
the same script on the same machine, so the ratios are comparable across machines even though
seconds are not.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import nbformat
from cryptography.fernet import Fernet
from mlflow import MlflowClient
from sqlalchemy import select

from mlops_core.database import session_scope, upgrade_database
from mlops_core.launch_commands import MODEL_SERVER_APP, uvicorn_command, worker_command
from mlops_core.schema import LogLine, Pipeline
from mlops_core.settings import Settings
from mlops_core.states import PipelineStatus
from mlops_core.task_queue import RUN_PIPELINE_TASK, make_celery
from tests.support.processes import ManagedProcess, free_port, wait_for, wait_http
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
    """The `papermill` command on the whole notebook, logging to its own MLflow run: what a data
    scientist's own run of it costs, interpreter start and imports included (as the pipeline's
    kernel pays them)."""
    path = workdir / f"baseline-{uuid.uuid4().hex[:6]}.ipynb"
    nbformat.write(notebook_named("bench-baseline"), path)
    client = MlflowClient(mlflow_uri)
    run = client.create_run(client.create_experiment(f"bench-{uuid.uuid4().hex[:6]}"))
    command = [
        *(sys.executable, "-m", "papermill", str(path), str(path.with_suffix(".out.ipynb"))),
        *("-p", "MODEL_OUTPUT_PATH", str(workdir / "baseline.joblib")),
        *("--kernel", "python3", "--cwd", str(workdir), "--no-progress-bar"),
        *("--log-level", "ERROR"),
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri, "MLFLOW_RUN_ID": run.info.run_id}
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--timeline", action="store_true", help="print the last sandboxed pipeline's timeline"
    )
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
        env = {
            "DATABASE_URL": database_url,
            "MLFLOW_TRACKING_URI": mlflow_server.uri,
            "ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "ALLOW_LOCAL_REPOS": "true",
            "NO_PROXY": "127.0.0.1,localhost",
        }
        lanes: dict[str, Lane] = {}
        walls: dict[str, list[float]] = {"on": [], "off": []}
        phases: dict[str, dict[str, list[float]]] = {"on": {}, "off": {}}
        try:
            server = redis_server.url.rsplit("/", 1)[0]
            for db, mode in enumerate(("on", "off"), start=1):
                lanes[mode] = Lane.start(workdir, env, mode, f"{server}/{db}")
            for mode, lane in lanes.items():
                lane.ready()
                print(f"warm-up with KERNEL_SANDBOX={mode}")
                run_pipeline(workdir, f"{mode}-warmup", database_url, lane.redis_url)
            base: list[float] = []
            timeline: list[str] = []
            for i in range(args.runs):
                base.append(baseline(workdir, mlflow_server.uri))
                print(f"  baseline {i}: {base[-1]:.2f} s")
                for mode, lane in lanes.items():
                    wall, times, lines = run_pipeline(
                        workdir, f"{mode}-{i}", database_url, lane.redis_url
                    )
                    walls[mode].append(wall)
                    for name, seconds in times.items():
                        phases[mode].setdefault(name, []).append(seconds)
                    if mode == "on":
                        timeline = lines
        finally:
            for lane in lanes.values():
                lane.stop()
            mlflow_server.stop()
            redis_server.stop()
    if args.timeline:
        print("\nlast sandboxed pipeline, seconds since the task was sent:")
        print("\n".join(timeline))
    print(
        f"\nbaseline (papermill command)      median {statistics.median(base):6.2f} s  "
        f"runs {fmt(base)}"
    )
    for mode in ("on", "off"):
        median = statistics.median(walls[mode])
        runs = fmt(walls[mode])
        print(f"push to served, sandbox {mode:<3}     median {median:6.2f} s  runs {runs}")
        for name, values in phases[mode].items():
            print(f"  phase {name:<9} median {statistics.median(values):6.2f} s")
    on, off = (statistics.median(walls[m]) for m in ("on", "off"))
    ratio = on / statistics.median(base)
    print(f"overhead ratio pipeline (sandboxed)/baseline: {ratio:.2f}  (goal <= 1.2)")
    print(f"sandbox ratio KERNEL_SANDBOX=on/off:          {on / off:.2f}  (goal <= 1.15)")


class Lane:
    """A worker and a model server with one KERNEL_SANDBOX mode, on a Redis database of their own
    (the deploy phase waits for a model server reporting in the worker's database)."""

    def __init__(self, redis_url: str, processes: list[ManagedProcess], health: str) -> None:
        self.redis_url = redis_url
        self.processes = processes
        self.health = health

    @classmethod
    def start(cls, workdir: Path, env: dict[str, str], mode: str, redis_url: str) -> Lane:
        home = workdir / f"home-{mode}"
        home.mkdir()
        lane_env = {**env, "REDIS_URL": redis_url, "MLOPS_HOME": str(home)}
        port = free_port()
        model_server = ManagedProcess(
            uvicorn_command(MODEL_SERVER_APP, port, log_level="warning"),
            env=lane_env,
            log_path=workdir / f"model-server-{mode}.log",
        )
        worker = ManagedProcess(
            worker_command(loglevel="WARNING", node_name=f"bench-{mode}@%h"),
            env={**lane_env, "KERNEL_SANDBOX": mode},
            log_path=workdir / f"worker-{mode}.log",
            cwd=home,
        )
        return cls(redis_url, [model_server, worker], f"http://127.0.0.1:{port}/health")

    def ready(self) -> None:
        wait_http(self.health, process=self.processes[0])

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


def run_pipeline(
    workdir: Path, index: str, database_url: str, redis_url: str
) -> tuple[float, dict, list[str]]:
    """Push to served: wall seconds, each phase's seconds, and the system log's timeline."""
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
    sent_at = time.time()
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
    print(f"  run {index}: {wall:.2f} s")
    with session_scope(database_url) as session:
        logged = session.scalars(
            select(LogLine)
            .where(LogLine.pipeline_id == pipeline_id, LogLine.stream == "system")
            .order_by(LogLine.seq)
        ).all()
        lines = [f"  {line.ts - sent_at:6.2f}  {line.text[:110]}" for line in logged]
    return wall, times, lines


def fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
