"""Prediction latency and throughput of the model server, against two baselines in the same run.

Baselines, measured on the same registered model with the same client load:
  - `mlflow models serve --env-manager local` (MLflow's own scoring server, /invocations);
  - the scikit-learn estimator called in-process (the floor: no HTTP, no JSON).
The model server is measured on /predict/{name}, the V2 /infer endpoint and MLflow's /invocations
(the same body `mlflow models serve` gets). Each endpoint gets
`--requests` requests from `--concurrency` concurrent clients, for one-row and 100-row batches.

Run: .venv/bin/python -m bench.predict_latency [--requests 2000] [--concurrency 16]
(starts its own Redis, MLflow server, model server and `mlflow models serve` on free ports).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import mlflow
import mlflow.sklearn
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

from mlops_core.launch_commands import model_server_command
from mlops_core.model_registry import registry_client, set_served_version
from tests.support.processes import ManagedProcess, free_port, wait_http
from tests.support.services import MlflowServer, RedisServer

NAME = "bench-iris"
ALIAS = "production"


async def hammer(
    url: str, bodies: list[Any], concurrency: int, check: Callable[[dict[str, Any]], None]
) -> tuple[list[float], float]:
    """POST every body with `concurrency` clients in flight; return latencies (s) and wall time."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                response = await client.post(url, json=body)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"{url}: {response.status_code} {response.text[:300]}")
                check(response.json())

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - started


def figures(latencies: list[float], wall: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "rps": len(ordered) / wall,
        "p50_ms": statistics.median(ordered) * 1000,
        "p95_ms": ordered[max(0, int(0.95 * len(ordered)) - 1)] * 1000,
    }


def direct(model: Any, rows: list[list[float]], repeats: int) -> dict[str, float]:
    """The in-process floor: predict + predict_proba on the estimator, no HTTP."""
    latencies = []
    started = time.perf_counter()
    for _ in range(repeats):
        t = time.perf_counter()
        model.predict(rows)
        model.predict_proba(rows)
        latencies.append(time.perf_counter() - t)
    return figures(latencies, time.perf_counter() - started)


def register_bench_model(
    tracking_uri: str,
) -> tuple[RandomForestClassifier, list[list[float]], str]:
    """Train the benchmarks' forest on iris, register it as NAME and serve it under ALIAS;
    the model, iris' rows and the version."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    x, y = load_iris(return_X_y=True)
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(x, y)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            input_example=x[:2],
            pip_requirements=["scikit-learn"],
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        )
    version = str(mlflow.register_model(info.model_uri, NAME).version)
    set_served_version(registry_client(tracking_uri), NAME, version, ALIAS)
    return model, x.tolist(), version


def start_model_server(port: int, env: dict[str, str], log_path: Path) -> ManagedProcess:
    """A model server on `port` (MODEL_SERVER_WORKERS processes), ready once every process has
    loaded the registry's versions."""
    process = ManagedProcess(
        model_server_command(port, log_level="warning"),
        env=env,
        log_path=log_path,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ready", 120, process)
    except BaseException:
        process.stop()
        raise
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        work = Path(tmp)
        redis_server = RedisServer(work / "redis")
        (work / "redis").mkdir()
        redis_server.start()
        tracking = MlflowServer(work / "mlflow")
        tracking.start()
        processes: list[ManagedProcess] = []
        try:
            model, x, version = register_bench_model(tracking.uri)
            env = {
                "REDIS_URL": redis_server.url,
                "MLFLOW_TRACKING_URI": tracking.uri,
                "NO_PROXY": "127.0.0.1,localhost",
            }
            ours_port, theirs_port = free_port(), free_port()
            ours = start_model_server(ours_port, env, work / "model-server.log")
            processes.append(ours)
            theirs = ManagedProcess(
                [
                    "mlflow",
                    "models",
                    "serve",
                    "-m",
                    f"models:/{NAME}/{version}",
                    "--env-manager",
                    "local",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(theirs_port),
                ],
                env=env,
                log_path=work / "mlflow-serve.log",
            )
            processes.append(theirs)
            wait_http(f"http://127.0.0.1:{theirs_port}/ping", 120, theirs)

            results: dict[str, dict[str, float]] = {}
            for batch in (1, 100):
                rows = (x * 100)[:batch]
                n = args.requests if batch == 1 else max(200, args.requests // 5)
                expected = len(rows)

                def ours_check(body: dict[str, Any], expected: int = expected) -> None:
                    assert len(body["predictions"]) == expected and body["model_version"]

                def v2_check(body: dict[str, Any], expected: int = expected) -> None:
                    assert body["outputs"][0]["shape"] == [expected]

                def theirs_check(body: dict[str, Any], expected: int = expected) -> None:
                    assert len(body["predictions"]) == expected

                v2_body = {
                    "inputs": [
                        {
                            "name": "input-0",
                            "shape": [batch, 4],
                            "datatype": "FP64",
                            "data": [v for row in rows for v in row],
                        }
                    ]
                }
                runs = {
                    "model server /predict": (
                        f"http://127.0.0.1:{ours_port}/predict/{NAME}",
                        {"data": rows},
                        ours_check,
                    ),
                    "model server /v2 infer": (
                        f"http://127.0.0.1:{ours_port}/v2/models/{NAME}/infer",
                        v2_body,
                        v2_check,
                    ),
                    "model server /invocations": (
                        f"http://127.0.0.1:{ours_port}/invocations",
                        {"inputs": rows},
                        theirs_check,
                    ),
                    "mlflow models serve": (
                        f"http://127.0.0.1:{theirs_port}/invocations",
                        {"inputs": rows},
                        theirs_check,
                    ),
                }
                for label, (url, body, check) in runs.items():
                    asyncio.run(hammer(url, [body] * 50, args.concurrency, check))  # warm-up
                    latencies, wall = asyncio.run(hammer(url, [body] * n, args.concurrency, check))
                    results[f"{label} (batch {batch})"] = figures(latencies, wall)
                results[f"sklearn in-process (batch {batch})"] = direct(model, rows, 500)

            print(
                f"\nPrediction benchmark: RandomForest(20 trees) on iris, "
                f"{args.concurrency} concurrent clients, {os.cpu_count()} CPUs"
            )
            print(f"{'endpoint':<44}{'req/s':>10}{'p50 ms':>10}{'p95 ms':>10}")
            for label, fig in results.items():
                print(f"{label:<44}{fig['rps']:>10.0f}{fig['p50_ms']:>10.2f}{fig['p95_ms']:>10.2f}")
            print(
                "(the model server answers labels and probabilities, from one pass over the "
                "forest, in a sandboxed model process, batching concurrent requests; mlflow "
                "models serve answers predictions only, in-process)\n"
                "run: .venv/bin/python -m bench.predict_latency [--requests N] [--concurrency C]"
            )
            for batch in (1, 100):
                theirs_fig = results[f"mlflow models serve (batch {batch})"]
                for route in ("/predict", "/invocations"):
                    ours_fig = results[f"model server {route} (batch {batch})"]
                    print(
                        f"batch {batch}: {route} throughput is "
                        f"{ours_fig['rps'] / theirs_fig['rps']:.2f}x mlflow models serve, "
                        f"p95 {ours_fig['p95_ms'] / theirs_fig['p95_ms']:.2f}x"
                    )
        finally:
            for process in processes:
                process.stop()
            tracking.stop()
            redis_server.stop()


if __name__ == "__main__":
    main()
