"""Backend responsiveness while MLflow hangs: webhook and pipeline-read latency under model load.

MLflow is a black hole (a port that takes connections and never answers, as a frozen server
does). `--model-requests` model clients each keep a GET /models outstanding the whole time,
asking again `--pause` seconds after each answer (as a client honouring Retry-After would; 0
floods the backend with requests the breaker answers at once, which measures the process's
HTTP throughput more than anything MLflow does). Meanwhile signed webhook pings and
GET /pipelines go out at a steady rate. It prints p50, p99 and max of the pings and reads
(GitHub gives a delivery 10 s; the goal is p99 under 1 s), and how the model requests were
answered (status; the slowest is one that waited on MLflow before the breaker opened).

Run: .venv/bin/python -m bench.backend_stall [--seconds 20] [--model-requests 50] [--rate 20]
(starts its own Redis and backend on free ports; MLflow and the model server are not started).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from mlops_core.launch_commands import BACKEND_APP, uvicorn_command
from tests.support.black_hole import BlackHole
from tests.support.github import delivery, ping_payload
from tests.support.processes import ManagedProcess, free_port, wait_http
from tests.support.services import RedisServer

GRACE_SECONDS = 15.0


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def describe(name: str, latencies: list[float], failures: int) -> None:
    ordered = sorted(latencies)
    print(
        f"{name:>14}: n {len(ordered)}  p50 {statistics.median(ordered) * 1000:.0f} ms  "
        f"p99 {percentile(ordered, 0.99) * 1000:.0f} ms  max {ordered[-1] * 1000:.0f} ms  "
        f"failed {failures}"
    )


async def run(
    url: str, seconds: float, model_requests: int, pause: float, rate: float, secret: str
) -> None:
    repo_url = "https://github.com/octo-org/bench-stall"
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=model_requests + 50)
    pings: list[float] = []
    reads: list[float] = []
    failures: Counter[str] = Counter()
    model_answers: Counter[str] = Counter()
    model_waits: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def model_client() -> None:
            while time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    answer = await client.get("/models")
                    model_answers[str(answer.status_code)] += 1
                except httpx.HTTPError as exc:
                    model_answers[type(exc).__name__] += 1
                model_waits.append(time.monotonic() - started)
                await asyncio.sleep(pause)

        async def timed(kind: str) -> None:
            started = time.monotonic()
            try:
                if kind == "ping":
                    item = delivery(ping_payload(repo_url), secret, event="ping")
                    answer = await client.post(
                        "/webhook/github", content=item.body, headers=item.headers
                    )
                else:
                    answer = await client.get("/pipelines")
                ok = answer.status_code == 200
            except httpx.HTTPError:
                ok = False
            (pings if kind == "ping" else reads).append(time.monotonic() - started)
            if not ok:
                failures[kind] += 1

        models = [asyncio.create_task(model_client()) for _ in range(model_requests)]
        await asyncio.sleep(0.5)  # the first model requests are now waiting on MLflow
        probes: list[asyncio.Task[None]] = []
        turn = 0
        while time.monotonic() < deadline:
            probes.append(asyncio.create_task(timed("ping" if turn % 2 == 0 else "read")))
            turn += 1
            await asyncio.sleep(1 / rate)
        await asyncio.gather(*probes)
        # A backend that stalls keeps model requests for minutes: stop counting after a grace.
        _, stuck = await asyncio.wait(models, timeout=GRACE_SECONDS)
        for task in stuck:
            task.cancel()
        model_answers["still waiting"] += len(stuck)
    describe("webhook ping", pings, failures["ping"])
    describe("GET /pipelines", reads, failures["read"])
    waits = sorted(model_waits)
    print(
        f"{'GET /models':>14}: {sum(model_answers.values())} answers {dict(model_answers)}; "
        f"slowest {waits[-1]:.1f} s, p50 {statistics.median(waits) * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Backend latency while MLflow hangs")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--model-requests", type=int, default=50)
    parser.add_argument(
        "--pause", type=float, default=1.0, help="seconds a model client waits after an answer"
    )
    parser.add_argument("--rate", type=float, default=20, help="pings + reads per second")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-stall-"))
    redis_server = RedisServer(work)
    redis_server.start()
    port = free_port()
    with BlackHole() as hole:
        backend = ManagedProcess(
            uvicorn_command(BACKEND_APP, port, log_level="warning"),
            env={
                "DATABASE_URL": f"sqlite:///{work / 'mlops.db'}",
                "REDIS_URL": redis_server.url,
                "MLOPS_HOME": str(work),
                "MLFLOW_TRACKING_URI": hole.url,
                "MODEL_SERVER_URL": f"http://127.0.0.1:{free_port()}",
                "ENCRYPTION_KEY": Fernet.generate_key().decode(),
                "NO_PROXY": "127.0.0.1,localhost",
            },
            log_path=work / "backend.log",
            cwd=Path(__file__).resolve().parents[1],
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/health", 60, backend)
            repo = httpx.post(
                f"{url}/repos", json={"github_url": "https://github.com/octo-org/bench-stall"}
            ).json()
            print(
                f"MLflow silent; {args.model_requests} GET /models kept outstanding for "
                f"{args.seconds:g} s; pings and pipeline reads at {args.rate:g}/s"
            )
            asyncio.run(
                run(
                    url,
                    args.seconds,
                    args.model_requests,
                    args.pause,
                    args.rate,
                    repo["webhook_secret"],
                )
            )
        finally:
            backend.stop()
            redis_server.stop()


if __name__ == "__main__":
    main()
