"""Predictions through the backend while model-server replicas die and restart.

Two replicas behind one backend (MODEL_SERVER_URL lists both). Predictions go out at a steady
rate (open loop: one every 1/rate s, whatever the answers do) while a schedule kills replica a
with SIGKILL, starts it again, then restarts replica b with SIGTERM (drain) and a new process.
It prints the predictions sent, how many failed and why, latency p50/p99/max over the run and
the slowest answer in the 3 s after each event.

Run: .venv/bin/python -m bench.replica_failover [--rate 20] [--seconds 60]
(starts its own Redis, MLflow, two model servers and a backend on free ports).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import mlflow
import mlflow.sklearn
from cryptography.fernet import Fernet
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mlops_core.launch_commands import BACKEND_APP, MODEL_SERVER_APP, uvicorn_command
from mlops_core.model_registry import registry_client, set_served_version
from tests.support.processes import ManagedProcess, free_port, wait_http
from tests.support.services import MlflowServer, RedisServer

NAME = "bench-failover"
ALIAS = "production"
ROOT = Path(__file__).resolve().parents[1]
AFTER_EVENT_SECONDS = 3.0


class Replica:
    """A model-server process on a fixed port, so that a restart comes back at the same URL."""

    def __init__(self, name: str, env: dict[str, str], work: Path) -> None:
        self.name = name
        self.env = {**env, "MODEL_SERVER_REPLICA_ID": name}
        self.work = work
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: ManagedProcess | None = None

    def start(self) -> None:
        self.process = ManagedProcess(
            uvicorn_command(MODEL_SERVER_APP, self.port, log_level="warning"),
            env=self.env,
            log_path=self.work / f"{self.name}.log",
            cwd=ROOT,
        )
        wait_http(f"{self.url}/ready", 120, self.process)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=60)


def register_model(tracking_uri: str) -> None:
    x, y = load_iris(return_X_y=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            LogisticRegression(max_iter=500).fit(x, y),
            name="model",
            input_example=x[:2],
            pip_requirements=["scikit-learn"],
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        )
    version = mlflow.register_model(info.model_uri, NAME)
    set_served_version(registry_client(tracking_uri), NAME, str(version.version), ALIAS)


async def load(
    url: str, rate: float, seconds: float, schedule: list[tuple[float, str, Callable[[], None]]]
) -> None:
    """Send predictions at `rate` for `seconds`; run each scheduled event (in a thread)."""
    started = time.monotonic()
    answers: list[tuple[float, float, str]] = []  # (sent at, latency, outcome)
    events: list[tuple[float, str]] = []
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(sent_at: float) -> None:
            try:
                answer = await client.post(
                    f"/models/{NAME}/predict", json={"data": [[5.1, 3.5, 1.4, 0.2]]}
                )
                outcome = "ok" if answer.status_code == 200 else f"HTTP {answer.status_code}"
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            answers.append((sent_at, time.monotonic() - started - sent_at, outcome))

        async def run_events() -> None:
            for at, label, action in schedule:
                await asyncio.sleep(max(0.0, started + at - time.monotonic()))
                events.append((time.monotonic() - started, label))
                print(f"{time.monotonic() - started:6.1f}s  {label}", flush=True)
                await asyncio.to_thread(action)

        requests: list[asyncio.Task[None]] = []
        chaos = asyncio.create_task(run_events())
        for index in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
            requests.append(asyncio.create_task(one(time.monotonic() - started)))
        await asyncio.gather(*requests, chaos)

    outcomes = Counter(outcome for _, _, outcome in answers)
    latencies = sorted(latency for _, latency, _ in answers)
    p99 = latencies[min(len(latencies) - 1, round(0.99 * len(latencies)) - 1)]
    print(
        f"predictions {len(answers)}  ok {outcomes['ok']}  failed {len(answers) - outcomes['ok']}"
        f"  {dict(outcomes)}"
    )
    print(
        f"latency p50 {statistics.median(latencies) * 1000:.0f} ms  p99 {p99 * 1000:.0f} ms  "
        f"max {latencies[-1] * 1000:.0f} ms"
    )
    for at, label in events:
        window = [lat for sent, lat, _ in answers if at <= sent < at + AFTER_EVENT_SECONDS]
        if window:
            print(
                f"  {AFTER_EVENT_SECONDS:g} s after {label!r}: {len(window)} predictions, "
                f"slowest {max(window) * 1000:.0f} ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description="Predictions while replicas die")
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    redis_server = RedisServer(work)
    tracking = MlflowServer(work / "mlflow")
    processes: list[ManagedProcess] = []
    replicas: list[Replica] = []
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    try:
        redis_server.start()
        tracking.start()
        register_model(tracking.uri)
        env = {
            "REDIS_URL": redis_server.url,
            "MLFLOW_TRACKING_URI": tracking.uri,
            "SERVING_ALIAS": ALIAS,
            "NO_PROXY": "127.0.0.1,localhost",
        }
        replicas = [Replica(name, env, work) for name in ("replica-a", "replica-b")]
        for replica in replicas:
            replica.start()
        a, b = replicas
        port = free_port()
        backend = ManagedProcess(
            uvicorn_command(BACKEND_APP, port, log_level="warning"),
            env={
                **env,
                "DATABASE_URL": f"sqlite:///{work / 'mlops.db'}",
                "MLOPS_HOME": str(work / "home"),
                "ENCRYPTION_KEY": Fernet.generate_key().decode(),
                "MODEL_SERVER_URL": f"{a.url},{b.url}",
            },
            log_path=work / "backend.log",
            cwd=ROOT,
        )
        processes.append(backend)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", 60, backend)

        def restart_b() -> None:
            b.stop()
            b.start()

        third = args.seconds / 4
        schedule = [
            (third, "kill -9 replica-a", a.kill),
            (2 * third, "start replica-a", a.start),
            (3 * third, "SIGTERM replica-b, start it again", restart_b),
        ]
        print(
            f"{args.rate:g} predictions/s for {args.seconds:g} s through the backend, two replicas",
            flush=True,
        )
        asyncio.run(load(url, args.rate, args.seconds, schedule))
    finally:
        for process in processes:
            process.stop()
        for replica in replicas:
            replica.stop()
        tracking.stop()
        redis_server.stop()


if __name__ == "__main__":
    main()
