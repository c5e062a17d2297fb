"""The shipped Prometheus files, checked by promtool and run for real against a live stack.

A real backend, model server and Celery worker (with a Redis of this test's own) get
predictions, a bad request, feedback, enough shifted inputs for a drift check, and two pipelines
(one that succeeds, one that fails), first left on the queue without a worker and then run by a
worker of two pool processes; a real `prometheus` scrapes the three with the shipped scrape
config and alert rules. Then every PromQL expression of the Grafana dashboards and every
alert's signal (its expression without the final threshold) must return data: a renamed metric
or a typo in a query fails here, not on an operator's dashboard. The worker's own counts are
checked on its metrics port: one pipeline per end state, each phase timed as often as it ran.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LogisticRegression

from local_stack.prometheus import local_config
from mlops_core.database import upgrade_database
from mlops_core.launch_commands import BACKEND_APP, uvicorn_command, worker_command
from mlops_core.model_registry import set_served_version
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.serving.conftest import REPO_ROOT, iris_like, register_version, unique
from tests.support.processes import ManagedProcess, free_port, wait_for, wait_http
from tests.support.services import RedisServer

MONITORING = REPO_ROOT / "deploy" / "monitoring"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
THRESHOLD = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*[-+0-9.e]+\s*$")
# Times each phase runs for one pipeline that succeeds and one that fails in its notebook.
PHASE_RUNS = {
    "fetch": 2,
    "validate": 2,
    "environment": 2,
    "execute": 2,
    "register": 1,
    "deploy": 1,
}

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="needs Debian's prometheus package (make test installs it)",
)


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    queries = []
    for path in sorted((MONITORING / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            queries += [target["expr"] for target in panel["targets"]]
    return queries


def pipeline_notebook(model_name: str, training: str) -> str:
    """A small notebook keeping the contract, trained by `training`."""
    cells = [
        ("mlops:config", f'MODEL_NAME = "{model_name}"\nVERSION = "0.1"'),
        (
            "mlops:preprocessing",
            "X = [[0.0, 1.0], [1.0, 0.0], [0.0, 0.9], [1.0, 0.1]]\ny = [0, 1, 0, 1]",
        ),
        ("mlops:training", training),
        ("mlops:evaluation", "import mlflow\nmlflow.log_metric('accuracy', 1.0)"),
        ("mlops:export", "import joblib\njoblib.dump(model, MODEL_OUTPUT_PATH)"),
    ]
    notebook = nbformat.v4.new_notebook()
    for tag, source in cells:
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = [tag]
        notebook.cells.append(cell)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    return nbformat.writes(notebook)


def git_repo(path: Path, files: dict[str, str]) -> None:
    """A local repository holding `files` in one commit on `main` (it stands in for GitHub)."""
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    identity = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    identity |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    env = identity | {"PATH": "/usr/bin:/bin", "HOME": str(path)}
    for args in (["init", "--quiet", "--initial-branch", "main"], ["add", "--all"]):
        subprocess.run(["git", "-C", str(path), *args], check=True, env=env)
    subprocess.run(
        ["git", "-C", str(path), "commit", "--quiet", "-m", "train"], check=True, env=env
    )


def scraped(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) → value of a Prometheus text exposition."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_promtool_accepts_the_shipped_config_and_rules(tmp_path: Path) -> None:
    rules = subprocess.run(
        ["promtool", "check", "rules", str(MONITORING / "alerts.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = (MONITORING / "prometheus.yml").read_text()
    (tmp_path / "metrics-token").write_text("token\n")
    shutil.copy(MONITORING / "alerts.yml", tmp_path / "alerts.yml")
    local = config.replace("/etc/prometheus/", f"{tmp_path}/")
    (tmp_path / "prometheus.yml").write_text(local)
    checked = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


# Five real services, two notebook runs and a Prometheus: minutes on a busy machine.
@pytest.mark.timeout(600)
def test_every_dashboard_query_and_alert_signal_returns_data_from_a_live_stack(
    registry: MlflowClient,
    mlflow_uri: str,
    serving_alias: str,
    start_server,
    tmp_path: Path,
) -> None:
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    redis_server = RedisServer(redis_dir)
    redis_server.start()
    processes: list[ManagedProcess] = []
    try:
        x, y = iris_like()
        frame = pd.DataFrame(x, columns=FEATURES)
        name = unique("watched")
        version = register_version(LogisticRegression(max_iter=500).fit(frame, y), frame, name)
        set_served_version(registry, name, version, serving_alias)
        server = start_server(replica=unique("watched"), REDIS_URL=redis_server.model_server_url)

        database_url = f"sqlite:///{tmp_path / 'mlops.db'}"
        upgrade_database(database_url)
        backend_port = free_port()
        backend = ManagedProcess(
            uvicorn_command(BACKEND_APP, backend_port, log_level="warning"),
            env={
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_server.url,
                "MLFLOW_TRACKING_URI": mlflow_uri,
                "MODEL_SERVER_URL": server.url,
                "MLOPS_HOME": str(tmp_path / "home"),
                "ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
                "SERVING_ALIAS": serving_alias,
                "DRIFT_MIN_ROWS": "5",
                "REFERENCE_WINDOW": "10",
                "DRIFT_WINDOW": "10",
                "ALLOW_LOCAL_REPOS": "true",
                "REQUEUE_INTERVAL_SECONDS": "1",
                "NO_PROXY": "127.0.0.1,localhost",
            },
            log_path=tmp_path / "backend.log",
            cwd=REPO_ROOT,
        )
        processes.append(backend)
        backend_url = f"http://127.0.0.1:{backend_port}"
        wait_http(f"{backend_url}/health", timeout=90, process=backend)

        with httpx.Client(timeout=30) as client:
            for i in range(20):
                row = x[i].tolist()
                if i >= 10:
                    row[2] += 3  # petal length moved: drift
                answer = client.post(
                    f"{server.url}/predict/{name}",
                    json={"data": [row]},
                    headers={"X-Request-ID": f"watch-{i}"},
                )
                assert answer.status_code == 200, answer.text
            assert client.post(f"{server.url}/predict/{name}", json={"data": [[1]]}).is_error

            def logged() -> int:
                page = client.get(f"{backend_url}/models/{name}/predictions").json()
                return int(page["total"])

            wait_for(lambda: logged() == 20, 30, 0.2, "20 logged predictions")
            items = [{"request_id": f"watch-{i}", "label": int(y[i])} for i in range(20)]
            feedback = client.post(f"{backend_url}/models/{name}/feedback", json={"items": items})
            assert feedback.json()["accepted"] == 20, feedback.text
            drift = client.get(
                f"{backend_url}/models/{name}/drift", params={"version": version}
            ).json()
            assert drift["drift_detected"] is True, drift

            # Two pipelines wait on the broker while no worker runs: the backend's loop sees them.
            training = {
                "good": "from sklearn.linear_model import LogisticRegression\n"
                "model = LogisticRegression().fit(X, y)",
                "bad": "raise ValueError('the data is bad')",
            }
            pipelines = []
            for kind, code in training.items():
                git_repo(
                    tmp_path / kind,
                    {"train.ipynb": pipeline_notebook(unique(f"watched-{kind}"), code)},
                )
                repo = client.post(
                    f"{backend_url}/repos",
                    json={"github_url": str(tmp_path / kind), "notebook_path": "train.ipynb"},
                )
                assert repo.status_code == 201, repo.text
                trigger = client.post(f"{backend_url}/repos/{repo.json()['id']}/trigger")
                assert trigger.status_code == 202, trigger.text
                pipelines.append(trigger.json()["pipeline_id"])

            def backend_sample(name: str) -> float | None:
                text = client.get(f"{backend_url}/metrics").text
                return scraped(text).get((name, frozenset()))

            wait_for(
                lambda: backend_sample("mlops_pipeline_queue_depth") == 2,
                30,
                0.2,
                "the backend to count 2 pipelines on the queue",
            )

            worker_port = free_port()
            worker = ManagedProcess(
                worker_command(concurrency=2, node_name=f"{unique('watched')}@%h"),
                env={
                    "DATABASE_URL": database_url,
                    "REDIS_URL": redis_server.url,
                    "MLFLOW_TRACKING_URI": mlflow_uri,
                    "MLOPS_HOME": str(tmp_path / "worker-home"),
                    "ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
                    "ALLOW_LOCAL_REPOS": "true",
                    "AUTO_DEPLOY_ON_SUCCESS": "false",
                    "WORKER_METRICS_PORT": str(worker_port),
                    "NO_PROXY": "127.0.0.1,localhost",
                },
                log_path=tmp_path / "worker.log",
                cwd=REPO_ROOT,
            )
            processes.append(worker)

            def finished() -> list[str] | None:
                states = [
                    client.get(f"{backend_url}/pipelines/{pipeline_id}").json()["status"]
                    for pipeline_id in pipelines
                ]
                return (
                    states if all(s in {"success", "failed", "cancelled"} for s in states) else None
                )

            assert wait_for(finished, 240, 0.5, "both pipelines to end") == ["success", "failed"]
            wait_for(
                lambda: backend_sample("mlops_pipeline_queue_depth") == 0,
                30,
                0.2,
                "the queue to be counted empty",
            )

            # The worker's main process sums what its two pool processes counted.
            worker_metrics = client.get(f"http://127.0.0.1:{worker_port}/metrics")
            assert worker_metrics.status_code == 200, worker_metrics.text
            counts = scraped(worker_metrics.text)

            def count(name: str, **labels: str) -> float:
                return counts[(name, frozenset(labels.items()))]

            finished_total = "mlops_pipelines_finished_total"
            assert count(finished_total, status="success") == 1
            assert count(finished_total, status="failed") == 1
            assert count(finished_total, status="cancelled") == 0
            phases = "mlops_pipeline_phase_duration_seconds_count"
            runs = {phase: count(phases, phase=phase) for phase in PHASE_RUNS}
            assert runs == PHASE_RUNS  # the failed pipeline stops after execute
            assert count("mlops_pipeline_phase_duration_seconds_sum", phase="execute") > 0
            # Both notebooks ran a kernel; each peaked above what an idle Python holds.
            assert count("mlops_kernel_peak_memory_bytes_count") == 2
            assert count("mlops_kernel_peak_memory_bytes_sum") > 2 * 30 * 2**20
            assert count("process_memory_rss_bytes") > 0
            assert client.get(f"http://127.0.0.1:{worker_port}/other").status_code == 404

        prometheus_port = free_port()
        config = local_config(
            {
                "backend": f"127.0.0.1:{backend_port}",
                "model-server": f"127.0.0.1:{server.port}",
                "worker": f"127.0.0.1:{worker_port}",
            },
            token_file=None,  # this stack sets no METRICS_TOKEN
        )
        config["global"]["scrape_interval"] = "1s"
        config["global"]["evaluation_interval"] = "1s"
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        prometheus = ManagedProcess(
            [
                "prometheus",
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            log_path=tmp_path / "prometheus.log",
        )
        processes.append(prometheus)
        api = f"http://127.0.0.1:{prometheus_port}/api/v1/query"

        def result(expr: str) -> list[Any]:
            body = httpx.get(api, params={"query": expr}, timeout=10).json()
            assert body["status"] == "success", (expr, body)
            return body["data"]["result"]

        wait_http(f"http://127.0.0.1:{prometheus_port}/-/ready", timeout=60, process=prometheus)
        wait_for(
            lambda: len(result("up == 1")) == 3 and len(result("ml_predictions_total")) > 0,
            60,
            0.5,
            "the three targets scraped",
        )
        wait_for(
            lambda: all(result("count_over_time(up[1m])")[0]["value"][1] >= "3" for _ in [0]),
            30,
            0.5,
            "three scrapes",
        )
        signals = [THRESHOLD.sub("", rule["expr"]) for rule in alert_rules()]
        empty = [expr for expr in [*dashboard_queries(), *signals] if not result(expr)]
        assert not empty, f"no data for: {empty}"
    finally:
        for process in processes:
            process.stop()
        redis_server.stop()
