"""The servers the serving benchmark compares, started on free loopback ports with the same models.

- ours: the model server from this repository (our .venv), following the registry alias of a
  private MLflow server, with a private Redis, as deployed (`python -m model_server.serve`):
  `/predict/{name}` and, as `ours-v2`, the Open Inference Protocol route of the same server;
  with `--workers 1,2` one such server per MODEL_SERVER_WORKERS value (keys `ours-w1`, ...);
- mlflow: `mlflow models serve --env-manager local` (our .venv's MLflow), one process per model,
  as MLflow serves one model per server;
- mlserver / mlserver-batched: Seldon MLServer with mlserver-sklearn in its own environment
  (anchor_envs), both models in one server, the second with adaptive batching (32 rows / 2 ms);
- fastapi: floor_app, the plain FastAPI app (our .venv).

Every server gets the same fitted estimators (one fit, then registered in MLflow, saved as an
MLflow model, and dumped with joblib), has its access log off, and answers labels only: ours is
asked for labels alone (`"probabilities": false`, V2 `outputs: [predict]`), as the others answer.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import mlflow
import mlflow.sklearn
import numpy as np
import psutil

from bench.predict_latency import start_model_server
from bench.serving.anchor_envs import anchor_bin, same_model_stack
from bench.serving.report import Memory
from mlops_core.model_registry import registry_client, set_served_version
from tests.support.processes import ManagedProcess, free_port, wait_http
from tests.support.services import MlflowServer, RedisServer

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ALIAS = "production"
MLSERVER_VERSION = "1.7.1"
# MLServer 1.7.1's inference worker dies at start with uvloop 0.22 (shared/ENVIRONMENT.md).
MLSERVER_REQUIREMENTS = [
    f"mlserver=={MLSERVER_VERSION}",
    f"mlserver-sklearn=={MLSERVER_VERSION}",
    "uvloop<0.22",
]
# MLServer's adaptive batching in the batched anchor: at most 32 requests, waiting at most 2 ms.
MLSERVER_BATCH = {"max_batch_size": 32, "max_batch_time": 0.002}
# uvicorn reads its options from UVICORN_* variables: no access log line per request.
QUIET_UVICORN = {"UVICORN_ACCESS_LOG": "false", "UVICORN_LOG_LEVEL": "warning"}
NO_PROXY = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

Rows = list[list[float]]


@dataclass(frozen=True)
class Model:
    """One fitted estimator and the name every server serves it under."""

    key: str
    title: str
    name: str
    estimator: Any


@dataclass
class Endpoint:
    """One measured route: where to POST for a model, the body it reads, the labels it answers."""

    key: str
    title: str
    url: Callable[[str], str]
    body: Callable[[Rows], Any]
    labels: Callable[[Any], list[Any]]
    processes: Callable[[str], list[ManagedProcess]]

    def memory(self, model_name: str) -> Memory:
        """Resident memory of the process trees serving `model_name` (children included)."""
        trees = [tree_memory(process.pid) for process in self.processes(model_name)]
        return Memory(sum(t.rss_bytes for t in trees), sum(t.processes for t in trees))


ENDPOINT_KEYS = ("ours", "ours-v2", "mlflow", "mlserver", "mlserver-batched", "fastapi")
DEFAULT_ENDPOINTS = ("ours", "mlflow", "mlserver", "mlserver-batched", "fastapi")


def tree_memory(pid: int) -> Memory:
    """RSS of a process and all its descendants (shared pages count once per process)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return Memory(0, 0)
    total = counted = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
        counted += 1
    return Memory(total, counted)


def rows_body(rows: Rows) -> dict[str, Any]:
    """Our /predict body, and the floor's."""
    return {"data": rows}


def our_rows_body(rows: Rows) -> dict[str, Any]:
    """Our /predict body asking for labels only (by default ours adds class probabilities)."""
    return {"data": rows, "probabilities": False}


def our_v2_body(rows: Rows) -> dict[str, Any]:
    """A V2 request asking ours for the labels output only (by default it adds probabilities)."""
    return {**v2_body(rows), "outputs": [{"name": "predict"}]}


def v2_body(rows: Rows) -> dict[str, Any]:
    """An Open Inference Protocol request: one FP64 [rows, features] tensor."""
    flat = [value for row in rows for value in row]
    shape = [len(rows), len(rows[0])]
    return {"inputs": [{"name": "input-0", "shape": shape, "datatype": "FP64", "data": flat}]}


def mlflow_body(rows: Rows) -> dict[str, Any]:
    """MLflow's scoring protocol, tensor form."""
    return {"inputs": rows}


def predictions_of(answer: Any) -> list[Any]:
    return list(answer["predictions"])


def v2_labels(answer: Any) -> list[Any]:
    return next(o["data"] for o in answer["outputs"] if o["name"] == "predict")


def _our_endpoints(
    base: str, server: ManagedProcess, suffix: str, note: str
) -> dict[str, Endpoint]:
    """`/predict` and V2 infer of one server of ours (`suffix`: the key's, `note`: the title's)."""
    return {
        f"ours{suffix}": Endpoint(
            f"ours{suffix}",
            f"ours /predict{note}",
            lambda name: f"{base}/predict/{name}",
            our_rows_body,
            predictions_of,
            lambda name: [server],
        ),
        f"ours-v2{suffix}": Endpoint(
            f"ours-v2{suffix}",
            f"ours /v2 infer{note}",
            lambda name: f"{base}/v2/models/{name}/infer",
            our_v2_body,
            v2_labels,
            lambda name: [server],
        ),
    }


class Fleet:
    """Starts the servers behind the chosen endpoints and stops them all on exit."""

    def __init__(
        self, work: Path, models: list[Model], example: np.ndarray, cache_dir: Path
    ) -> None:
        self.work = work
        self.models = models
        self.example = example
        self.cache_dir = cache_dir
        self._stack = ExitStack()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def start(self, keys: list[str], workers: list[int]) -> list[Endpoint]:
        """Start what `keys` need (each server once) and return their endpoints in that order;
        ours once per count in `workers` (none: as the environment says), keys `ours-w<n>`."""
        made: dict[str, Endpoint] = {}
        if {"ours", "ours-v2"} & set(keys):
            made.update(self._ours(workers))
        if "mlflow" in keys:
            made["mlflow"] = self._mlflow_serve()
        for key, batching in (("mlserver", False), ("mlserver-batched", True)):
            if key in keys:
                made[key] = self._mlserver(key, batching)
        if "fastapi" in keys:
            made["fastapi"] = self._floor()
        return [
            endpoint
            for key in keys
            for made_key, endpoint in made.items()
            if made_key == key or made_key.startswith(f"{key}-w")
        ]

    def _process(
        self, name: str, args: list[str], env: dict[str, str], **kw: Any
    ) -> ManagedProcess:
        process = ManagedProcess(args, env=env, log_path=self.work / f"{name}.log", **kw)
        self._stack.callback(process.stop)
        return process

    def _ours(self, workers: list[int]) -> dict[str, Endpoint]:
        (self.work / "redis").mkdir()
        redis_server = RedisServer(self.work / "redis")
        redis_server.start()
        self._stack.callback(redis_server.stop)
        tracking = MlflowServer(self.work / "mlflow")
        tracking.start()
        self._stack.callback(tracking.stop)
        mlflow.set_tracking_uri(tracking.uri)
        mlflow.set_registry_uri(tracking.uri)
        client = registry_client(tracking.uri)
        for model in self.models:
            with mlflow.start_run():
                info = mlflow.sklearn.log_model(
                    model.estimator,
                    name="model",
                    input_example=self.example,
                    pip_requirements=["scikit-learn"],
                    serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
                )
            version = mlflow.register_model(info.model_uri, model.name).version
            set_served_version(client, model.name, str(version), ALIAS)
        env = {
            "REDIS_URL": redis_server.url,
            "MLFLOW_TRACKING_URI": tracking.uri,
            "SERVING_ALIAS": ALIAS,
            **NO_PROXY,
        }
        endpoints: dict[str, Endpoint] = {}
        for count in workers or [None]:
            suffix, note = ("", "") if count is None else (f"-w{count}", f", {count} proc.")
            port = free_port()
            server = start_model_server(
                port,
                {**env, "MODEL_SERVER_REPLICA_ID": f"ours{suffix}"}
                | ({} if count is None else {"MODEL_SERVER_WORKERS": str(count)}),
                self.work / f"ours{suffix}.log",
            )
            self._stack.callback(server.stop)
            endpoints.update(_our_endpoints(f"http://127.0.0.1:{port}", server, suffix, note))
        return endpoints

    def _mlflow_serve(self) -> Endpoint:
        bases: dict[str, str] = {}
        processes: dict[str, ManagedProcess] = {}
        for model in self.models:
            path = self.work / "mlflow-models" / model.name
            mlflow.sklearn.save_model(
                model.estimator,
                str(path),
                input_example=self.example,
                pip_requirements=["scikit-learn"],
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            )
            port = free_port()
            process = self._process(
                f"mlflow-serve-{model.key}",
                [
                    str(VENV_BIN / "mlflow"),
                    *("models", "serve", "-m", str(path), "--env-manager", "local"),
                    *("--host", "127.0.0.1", "--port", str(port)),
                ],
                {**QUIET_UVICORN, **NO_PROXY},
            )
            bases[model.name] = f"http://127.0.0.1:{port}"
            processes[model.name] = process
        for name, base in bases.items():
            wait_http(f"{base}/ping", 120, processes[name])
        return Endpoint(
            "mlflow",
            "mlflow models serve",
            lambda name: f"{bases[name]}/invocations",
            mlflow_body,
            predictions_of,
            lambda name: [processes[name]],
        )

    def _mlserver(self, key: str, batching: bool) -> Endpoint:
        bin_dir = anchor_bin(self.cache_dir, "mlserver", MLSERVER_REQUIREMENTS + same_model_stack())
        folder = self.work / key
        for model in self.models:
            (folder / model.name).mkdir(parents=True)
            joblib.dump(model.estimator, folder / model.name / "model.joblib")
            settings = {
                "name": model.name,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "v1"},
                **(MLSERVER_BATCH if batching else {}),
            }
            (folder / model.name / "model-settings.json").write_text(json.dumps(settings))
        port = free_port()
        server_settings = {
            "host": "127.0.0.1",
            "http_port": port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "debug": False,  # MLServer's default (True) logs every request
        }
        (folder / "settings.json").write_text(json.dumps(server_settings))
        process = self._process(
            key, [str(bin_dir / "mlserver"), "start", str(folder)], NO_PROXY, cwd=folder
        )
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/v2/health/ready", 180, process)
        title = "MLServer, batching 32 / 2 ms" if batching else "MLServer"
        return Endpoint(
            key,
            title,
            lambda name: f"{base}/v2/models/{name}/infer",
            v2_body,
            v2_labels,
            lambda name: [process],
        )

    def _floor(self) -> Endpoint:
        folder = self.work / "floor-models"
        folder.mkdir()
        for model in self.models:
            joblib.dump(model.estimator, folder / f"{model.name}.joblib")
        port = free_port()
        process = self._process(
            "fastapi",
            [
                str(VENV_BIN / "uvicorn"),
                "bench.serving.floor_app:app",
                *("--host", "127.0.0.1", "--port", str(port)),
            ],
            {"FLOOR_MODELS_DIR": str(folder), **QUIET_UVICORN, **NO_PROXY},
            cwd=REPO_ROOT,
        )
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/docs", 60, process)
        return Endpoint(
            "fastapi",
            "plain FastAPI app",
            lambda name: f"{base}/predict/{name}",
            rows_body,
            predictions_of,
            lambda name: [process],
        )
